"""``gstalk evaluate``: metrics on the held-out test frames, baselines, articulation, cross-audio, a report.

Each test frame is re-rendered the way new speech would be rendered: the lower face predicted from the
clip's own audio by the run's audio → motion model, the upper face, camera and real-pixel layer from the
frame itself. Two baselines go through the same path: the model driven with silence (zeroed audio), and
the model saved after the static stage on the canonical face (no motion at all). The full model must
beat both on the mouth. Articulation: how the rendered mouth opening (MediaPipe on the rendered frames)
follows the real one. Cross-audio: the model driven by other speakers' speech, and how its mouth follows
their audio energy. The seam: how much of the background plate shows through where the face and neck
were (a hole under a jaw that moved away from the replayed frame's neck).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..config import EvaluateConfig, save_config
from ..data.frames import to_uint8
from ..drive.driver import Driver, PoseSource
from ..errors import GstalkError
from ..face.mesh import N_MESH, mouth_gap
from ..fileio import atomic_folder, atomic_path, strict_json, write_json_atomic
from ..media import AUDIO_RATE, read_audio
from ..model.checkpoint import load_model
from ..model.motion import LIPS
from ..model.talking_head import Composite, Drive, render_portrait
from ..outputs import claim_output
from ..regions import HEAD_REGIONS, Region
from .metrics import (
    LMD_SIZE,
    MouthTracker,
    audio_energy,
    face_box,
    lip_sync,
    lmd,
    mouth_box,
    mouth_opening,
    mouth_psnr,
    psnr,
    spread,
    ssim,
)

NOT_COMPUTED = "not computed: weights missing"
MODES = ("full", "zero_audio", "static")


def seam_share(comp: Composite, labels: np.ndarray) -> float:
    """Share of the dilated face-and-neck region of the replayed frame where the background plate shows:
    the plate fills that frame's head regions under the render, so any of it left uncovered is a hole."""
    plate = np.isin(labels, HEAD_REGIONS)
    region = np.isin(labels, (*HEAD_REGIONS, Region.NECK)).astype(np.uint8)
    k = max(3, labels.shape[0] // 64) | 1
    region = cv2.dilate(region, np.ones((k, k), np.uint8)).astype(bool)
    uncovered = (1 - comp.alpha).cpu().numpy()
    return float((uncovered * plate)[region].sum() / max(region.sum(), 1))


@dataclass
class TestSequence:
    """The test frames as evaluated: what the report shows."""

    ids: np.ndarray
    real: list[np.ndarray]
    rendered: list[np.ndarray]
    energy: np.ndarray  # audio dB per frame
    real_open: list[float]
    rendered_open: list[float]
    predicted_gap: np.ndarray  # the predicted mesh's inner-lip gap per frame (mm)
    speech: np.ndarray  # the whole clip's 16 kHz audio


def track_sequence(frames: list[np.ndarray]) -> list[np.ndarray | None]:
    """MediaPipe landmarks of each frame (pixels at 512²), tracked through the sequence."""
    tracker = MouthTracker()
    try:
        return [tracker(f) for f in frames]
    finally:
        tracker.close()


def _summary(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return round(float(np.mean(vals)), 4) if vals else None


def _correlation(a, b) -> float | None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return None
    return round(float(np.corrcoef(a[ok], b[ok])[0, 1]), 4)


class _Renderer:
    """Test frames of each mode, through the path new speech takes."""

    def __init__(self, driver: Driver, static_model) -> None:
        self.driver, self.static_model = driver, static_model
        feats = np.asarray(driver.ds.audio_features, np.float32)
        silence = np.broadcast_to(driver.frames.silence, feats.shape)
        self.features = {"full": feats, "zero_audio": np.ascontiguousarray(silence, dtype=np.float32)}
        self.codes = {mode: driver.codes(f) for mode, f in self.features.items()}

    @torch.no_grad()
    def __call__(self, i: int, mode: str) -> tuple[Composite, np.ndarray]:
        d = self.driver
        data = d.frames
        if mode == "static":
            frame = (self.static_model or d.model)(Drive())
        else:
            frame = d.model(d.drive(self.features[mode], self.codes[mode], i, i))
        comp = render_portrait(frame, data.camera(i), data.target(i).layer, backend=d.backend)
        return comp, to_uint8(comp.image)


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Evaluate the run into ``config.out`` (default RUN/eval), replaced whole when complete.

    Without ``--cross-audio``, the files the previous evaluation there was driven with are used again (a
    re-run keeps the demo's cross-audio row)."""
    out = Path(config.out) if config.out is not None else Path(config.run) / "eval"
    with claim_output(out, [config.dataset, *config.cross_audio]):
        if out.exists() and any(out.iterdir()) and not (out / "metrics.json").is_file():
            raise GstalkError(f"{out} exists and is not a gstalk evaluation", "choose another --out")
        if not config.cross_audio:
            config = dataclasses.replace(config, cross_audio=previous_cross_audio(out))
        with atomic_folder(out, overwrite=True) as tmp:
            metrics = _evaluate(config, tmp)
    if config.progress:
        tqdm.write(f"gstalk evaluate: metrics in {out / 'metrics.json'}, report in {out / 'report.html'}")
    return metrics


def previous_cross_audio(out: Path) -> tuple[Path, ...]:
    """The cross-audio files of the evaluation in ``out`` that still exist."""
    try:
        rows = json.loads((out / "metrics.json").read_text()).get("cross_audio") or []
        return tuple(Path(r["path"]) for r in rows if Path(r["path"]).is_file())
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return ()


def _evaluate(config: EvaluateConfig, out: Path) -> dict[str, Any]:
    start = time.perf_counter()
    driver = Driver(config.run, config.dataset, config.size, config.device, config.backend)
    device = driver.device
    ds = driver.ds
    ids = ds.test_ids[: config.max_frames] if config.max_frames else ds.test_ids
    if len(ids) < 2:
        raise GstalkError(
            f"the dataset {ds.root} has {len(ids)} usable test frame(s); evaluation needs at least 2",
            "prepare it with a larger --test-fraction, or pass a larger --max-frames",
        )
    scale = driver.size / ds.size
    lpips_model = None
    if config.lpips_weights is not None:
        from ..model.lpips import LPIPS

        lpips_model = LPIPS.from_folder(config.lpips_weights).to(device)
    modes = MODES if config.baselines else ("full",)
    static_model, static_source = None, "the final model on the canonical face (no run/stages/static)"
    if config.baselines and (Path(config.run) / "stages" / "static" / "checkpoint.json").is_file():
        static_model = load_model(Path(config.run) / "stages" / "static", device)[0].eval()
        static_source = "the model saved after the static stage, on the canonical face (no motion)"
    render = _Renderer(driver, static_model)
    real_frames = [driver.frames.image(i) for i in ids.tolist()]
    real_lms = track_sequence(real_frames)
    real_open = [mouth_opening(lm) for lm in real_lms]
    results: dict[str, list[dict[str, Any]]] = {}
    rendered: dict[str, list[np.ndarray]] = {}
    opening: dict[str, list[float]] = {}
    seams: list[float] = []
    bar = tqdm(total=len(ids) * len(modes), desc="evaluate", unit="frame", disable=not config.progress)
    for mode in modes:
        fakes = []
        for i in ids.tolist():
            comp, image = render(i, mode)
            fakes.append(image)
            if mode == "full":
                seams.append(seam_share(comp, driver.frames.target(i).labels.cpu().numpy()))
            bar.update()
        fake_lms = track_sequence(fakes)
        rows = []
        for k, i in enumerate(ids.tolist()):
            real, fake = real_frames[k], fakes[k]
            box = mouth_box(ds.tracks.landmarks2d[i], driver.size, scale)
            row: dict[str, Any] = {
                "frame": i,
                "psnr": psnr(real, fake),
                "ssim": ssim(real, fake),
                "mouth_psnr": mouth_psnr(real, fake, box),
                "lmd": lmd(real_lms[k], fake_lms[k]),
            }
            if lpips_model is not None and mode == "full":
                as_tensor = lambda x: torch.from_numpy(x).to(device).float() / 255  # noqa: E731
                row["lpips"] = float(lpips_model(as_tensor(fake), as_tensor(real)))
            rows.append(row)
        results[mode], rendered[mode] = rows, fakes
        opening[mode] = [mouth_opening(lm) for lm in fake_lms]
    bar.close()

    speech = read_audio(ds.audio_path)
    energy = audio_energy(speech, ds.n_frames, ds.fps)[ids]
    metrics: dict[str, Any] = {
        "run": str(config.run),
        "dataset": str(ds.root),
        "test_frames": len(ids),
        "size": driver.size,
        "lmd_pixels_at": LMD_SIZE,
    }
    for mode in modes:
        rows = results[mode]
        metrics[mode] = {
            **({"model": static_source} if mode == "static" else {}),
            "psnr": _summary(rows, "psnr"),
            "ssim": _summary(rows, "ssim"),
            "mouth_psnr": _summary(rows, "mouth_psnr"),
            "lmd": _summary(rows, "lmd"),
            "lmd_frames": sum(r["lmd"] is not None for r in rows),
        }
    metrics["full"]["lpips"] = _summary(results["full"], "lpips") if lpips_model else NOT_COMPUTED
    metrics["full"]["lse_c"] = metrics["full"]["lse_d"] = NOT_COMPUTED
    if config.syncnet_weights is not None:
        from .syncnet import SyncNet, lse

        syncnet = SyncNet.from_file(config.syncnet_weights).to(device)
        seg = speech[round(ids[0] / ds.fps * AUDIO_RATE) :]
        boxes = [face_box(ds.tracks.landmarks2d[i], driver.size, scale) for i in ids.tolist()]
        scores = lse(syncnet, rendered["full"], seg, ds.fps, boxes)
        metrics["full"]["lse_c"], metrics["full"]["lse_d"] = scores["lse_c"], scores["lse_d"]
    predicted_gap = _predicted_gap(driver, render.codes["full"], ids)
    metrics["articulation"] = _articulation(driver, render, ids, real_open, opening, seams)
    metrics["lip_sync"] = {
        "measure": "Pearson correlation of per-frame audio energy (dB) and MediaPipe mouth opening, "
        "at the best offset within ±5 frames",
        "real": lip_sync(energy, np.array(real_open)).as_dict(),
        "rendered": lip_sync(energy, np.array(opening["full"])).as_dict(),
    }
    metrics["cross_audio"] = cross_audio(driver, config, real_open)
    sheet = out / "mouth_sheet.png"
    mouth_sheet(rendered["full"], real_frames, predicted_gap, sheet)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    metrics = strict_json(metrics)
    write_json_atomic(out / "metrics.json", metrics)
    save_config(config, out)
    from .report import write_report

    sequence = TestSequence(
        ids, real_frames, rendered["full"], energy, real_open, opening["full"], predicted_gap, speech
    )
    write_report(out, driver, metrics, results, sequence)
    return metrics


def _predicted_gap(driver: Driver, codes: torch.Tensor, ids: np.ndarray) -> np.ndarray:
    """The inner-lip gap (mm) of the mesh the full model renders for each test frame."""
    with torch.no_grad():
        meshes = [driver.model.compose_mesh(codes[i], driver.frames.mesh(i)).cpu().numpy() for i in ids]
    return 1000 * mouth_gap(np.stack(meshes))


def _articulation(driver, render: _Renderer, ids, real_open, opening, seams) -> dict[str, Any]:
    """How the rendered mouth follows the real one, and the audio → motion model's lip error."""
    model, ds = driver.model, driver.ds
    tracked = torch.from_numpy(ds.tracks.mesh[ids, :N_MESH] - ds.tracks.canonical_shape[None, :N_MESH])
    with torch.no_grad():
        basis = model.basis
        error = basis.reconstruct(render.codes["full"][ids]) - tracked.to(basis.mean)
        lip_error = float(1000 * error[:, LIPS].norm(dim=-1).mean())
    real_range = spread(real_open)
    row: dict[str, Any] = {
        "opening_correlation": _correlation(opening["full"], real_open),
        "opening_range_ratio": _ratio(spread(opening["full"]), real_range),
        "real_opening_range": real_range,
        "lip_vertex_error_mm": round(lip_error, 3),
        "seam_share": round(float(np.mean(seams)), 5) if seams else None,
        "measures": {
            "opening_correlation": "Pearson correlation of the rendered and the real mouth opening "
            "(MediaPipe's inner-lip gap over the eye-corner distance) on the held-out frames",
            "opening_range_ratio": "the rendered opening's 5th–95th percentile range over the real one's",
            "lip_vertex_error_mm": "mean distance of the lip vertices predicted from the audio to the "
            "tracked ones, in the head frame",
            "seam_share": "share of the dilated face-and-neck region where the background plate shows",
        },
    }
    if "zero_audio" in opening:
        row["zero_audio_opening_range_ratio"] = _ratio(spread(opening["zero_audio"]), real_range)
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def cross_audio(driver: Driver, config: EvaluateConfig, real_open: list[float]) -> list[dict[str, Any]]:
    """Drive the model with other speakers' speech: how its mouth follows their audio energy, how wide it
    opens against the real clip, and the seam."""
    rows = []
    real_range = spread(real_open)
    for path in config.cross_audio:
        speech = read_audio(path)[: int(config.cross_seconds * AUDIO_RATE)]
        feats = driver.features(speech, speech_model=config.speech_model)
        codes = driver.codes(feats)
        tracker = MouthTracker()
        opening, seams = [], []
        pose = PoseSource("replay")
        for k in range(len(feats)):
            comp = driver.render_frame(feats, codes, k, pose)
            opening.append(mouth_opening(tracker(to_uint8(comp.image))))
            s = driver.source(k, pose)
            seams.append(seam_share(comp, driver.frames.target(s).labels.cpu().numpy()))
        tracker.close()
        energy = audio_energy(speech, len(feats), driver.fps)
        rows.append(
            {
                "audio": Path(path).name,
                "path": str(Path(path).resolve()),
                "seconds": round(len(speech) / AUDIO_RATE, 2),
                **lip_sync(energy, np.array(opening)).as_dict(),
                "opening_range_ratio": _ratio(spread(opening), real_range),
                "seam_share": round(float(np.mean(seams)), 5),
            }
        )
    return rows


def mouth_sheet(
    rendered: list[np.ndarray], real: list[np.ndarray], gap: np.ndarray, out: Path, n: int = 4
) -> None:
    """Rendered frames at the most closed and the most open predicted mouth (top), the real frames below."""
    order = np.argsort(gap)
    picks = [*order[:n], *order[-n:]] if len(order) >= 2 * n else list(order)
    tiles = []
    for j in picks:
        column = np.concatenate([rendered[j], real[j]], 0)
        cv2.putText(column, f"{gap[j]:.1f} mm", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
        tiles.append(column)
    sheet = np.concatenate(tiles, 1)
    with atomic_path(out) as tmp:
        _ok, buf = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        tmp.write_bytes(buf.tobytes())
