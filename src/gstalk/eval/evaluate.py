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
from ..data.run_layout import EVALUATION_FILES, META_FILE, METRICS, MOUTH_SHEET, REPORT, eval_dir, stage_dir
from ..drive.driver import Driver, PoseSource, Speech
from ..errors import GstalkError
from ..face.mesh import N_MESH, mouth_gap
from ..face.sync import lagged_correlation, mouth_openings
from ..fileio import atomic_folder, atomic_path, strict_json, write_json_atomic
from ..media import AUDIO_RATE, read_audio
from ..model.checkpoint import load_model
from ..model.talking_head import Composite
from ..outputs import claim_output
from ..regions import HEAD_REGIONS, Region
from ..speech.motion import LIPS
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


@dataclass
class ModeRender:
    """One mode's renders of the test frames: images, MediaPipe mouth landmarks, openings, and (full mode)
    the seam share of each frame."""

    images: list[np.ndarray]
    landmarks: list[np.ndarray | None]
    opening: list[float]
    seams: list[float]


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


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Evaluate the run into ``config.out`` (default RUN/eval; RUN/eval-reference with
    ``--reference-video``), replaced whole when complete. Raises
    :class:`GstalkError` when ``out`` holds anything but an earlier evaluation's files.

    Without ``--cross-audio``, the files the previous evaluation there was driven with are used again (a
    re-run keeps the demo's cross-audio row)."""
    default = eval_dir(config.run, reference=config.reference_video is not None)
    out = Path(config.out) if config.out is not None else default
    inputs = [config.dataset, config.reference_video, *config.cross_audio, *config.cross_video]
    with claim_output(out, inputs):
        if out.exists() and any(out.iterdir()) and not (out / METRICS).is_file():
            raise GstalkError(f"{out} exists and is not a gstalk evaluation", "choose another --out")
        kept = sorted(p.name for p in out.iterdir()) if out.exists() else []
        others = [name for name in kept if name not in EVALUATION_FILES]
        if others:  # the evaluation is replaced whole: never with something the user put beside it
            raise GstalkError(
                f"{out} holds files gstalk evaluate did not write ({', '.join(others[:5])})",
                "move them elsewhere, or choose another --out",
            )
        if not config.cross_audio and config.reference_video is None:
            config = dataclasses.replace(config, cross_audio=previous_cross_audio(out))
        with atomic_folder(out, overwrite=True) as tmp:
            if config.reference_video is not None:
                from .reference import evaluate_reference

                metrics = evaluate_reference(config, tmp)
            else:
                metrics = _evaluate(config, tmp)
    if config.progress:
        tqdm.write(f"gstalk evaluate: metrics in {out / METRICS}, report in {out / REPORT}")
    return metrics


def previous_cross_audio(out: Path) -> tuple[Path, ...]:
    """The cross-audio files of the evaluation in ``out`` that still exist."""
    try:
        rows = json.loads((out / METRICS).read_text()).get("cross_audio") or []
        return tuple(Path(r["path"]) for r in rows if Path(r["path"]).is_file())
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return ()


def _evaluate(config: EvaluateConfig, out: Path) -> dict[str, Any]:
    """Render the test frames in every mode, score them, add the extras, write metrics and report."""
    start = time.perf_counter()
    driver = Driver.for_config(config)
    ids = _test_ids(driver, config)
    modes = MODES if config.baselines else ("full",)
    static_model, static_source = _static_model(config, driver.device)
    speech = {"full": driver.speech(features=driver.ds.audio_features)}
    if "zero_audio" in modes:
        silence = np.broadcast_to(driver.frames.silence, driver.ds.audio_features.shape)
        speech["zero_audio"] = driver.speech(features=silence)
    real_frames = [driver.frames.image(i) for i in ids.tolist()]
    real_lms = track_sequence(real_frames)
    bar = tqdm(total=len(ids) * len(modes), desc="evaluate", unit="frame", disable=not config.progress)
    renders = {mode: render_mode(driver, ids, mode, speech.get(mode), static_model, bar) for mode in modes}
    bar.close()
    results = {mode: score_frames(driver, ids, real_frames, real_lms, r.images, r.landmarks)
               for mode, r in renders.items()}  # fmt: skip
    metrics = summarise(driver, ids, results, static_source)
    clip_speech = read_audio(driver.ds.audio_path)
    real_open = [mouth_opening(lm) for lm in real_lms]
    energy = audio_energy(clip_speech, driver.ds.n_frames, driver.fps)[ids]
    add_image_extras(metrics, config, driver, ids, renders["full"].images, real_frames, clip_speech)
    predicted_gap = _predicted_gap(driver, speech["full"].codes, ids)
    metrics["articulation"] = _articulation(driver, speech["full"], ids, real_open, renders)
    metrics["lip_sync"] = {
        "measure": "Pearson correlation of per-frame audio energy (dB) and MediaPipe mouth opening, "
        "at the best offset within ±5 frames",
        "real": lip_sync(energy, np.array(real_open)).as_dict(),
        "rendered": lip_sync(energy, np.array(renders["full"].opening)).as_dict(),
    }
    metrics["cross_audio"] = cross_audio(driver, config, real_open)
    metrics["cross_video"] = [cross_video(driver, path, config.prior) for path in config.cross_video]
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    sequence = TestSequence(ids, real_frames, renders["full"].images, energy, real_open,
                            renders["full"].opening, predicted_gap, clip_speech)  # fmt: skip
    return write_evaluation(out, config, driver, metrics, results, sequence)


def _test_ids(driver: Driver, config: EvaluateConfig) -> np.ndarray:
    ds = driver.ds
    ids = ds.test_ids[: config.max_frames] if config.max_frames else ds.test_ids
    if len(ids) < 2:
        raise GstalkError(
            f"the dataset {ds.root} has {len(ids)} usable test frame(s); evaluation needs at least 2",
            "prepare it with a larger --test-fraction, or pass a larger --max-frames",
        )
    return ids


def _static_model(config: EvaluateConfig, device) -> tuple[Any, str]:
    """The model saved after the static stage (the static baseline), or None for the final model."""
    folder = stage_dir(config.run, "static")
    if config.baselines and (folder / META_FILE).is_file():
        return (load_model(folder, device)[0].eval(),
                "the model saved after the static stage, on the canonical face (no motion)")  # fmt: skip
    return None, "the final model on the canonical face (no run/stages/static)"


def render_mode(driver: Driver, ids: np.ndarray, mode: str, speech: Speech | None, static_model,
                bar: tqdm | None = None) -> ModeRender:  # fmt: skip
    """The test frames of one mode, through the path new speech takes: ``full`` (the clip's own speech),
    ``zero_audio`` (silence) or ``static`` (the static model on the canonical face). Each frame is posed
    by itself (its camera, upper face and real-pixel layer)."""
    images, seams = [], []
    order = ids.tolist()
    for i, after in zip(order, [*order[1:], None]):
        if mode == "static":
            comp = driver.render_frame(None, i, source=i, model=static_model, read_ahead=after)
        else:
            comp = driver.render_frame(speech, i, source=i, read_ahead=after)
        images.append(to_uint8(comp.image))
        if mode == "full":
            seams.append(seam_share(comp, driver.frames.target(i).labels.cpu().numpy()))
        if bar is not None:
            bar.update()
    landmarks = track_sequence(images)
    return ModeRender(images, landmarks, [mouth_opening(lm) for lm in landmarks], seams)


def score_frames(driver: Driver, ids: np.ndarray, real: list[np.ndarray], real_lms: list,
                 fake: list[np.ndarray], fake_lms: list) -> list[dict[str, Any]]:  # fmt: skip
    """Per test frame: PSNR, SSIM, mouth-crop PSNR and LMD of a rendered frame against the real one."""
    scale = driver.size / driver.ds.size
    rows = []
    for k, i in enumerate(ids.tolist()):
        box = mouth_box(driver.ds.tracks.landmarks2d[i], driver.size, scale)
        rows.append({
            "frame": i, "psnr": psnr(real[k], fake[k]), "ssim": ssim(real[k], fake[k]),
            "mouth_psnr": mouth_psnr(real[k], fake[k], box), "lmd": lmd(real_lms[k], fake_lms[k]),
        })  # fmt: skip
    return rows


def summarise(driver: Driver, ids: np.ndarray, results: dict[str, list], static_source: str) -> dict:
    """The metrics' head: what was evaluated, and each mode's mean scores."""
    metrics: dict[str, Any] = {
        "run": str(driver.run),
        "dataset": str(driver.ds.root),
        "audio_features": driver.ds.audio_spec.features,
        "test_frames": len(ids),
        "size": driver.size,
        "lmd_pixels_at": LMD_SIZE,
    }
    for mode, rows in results.items():
        metrics[mode] = {
            **({"model": static_source} if mode == "static" else {}),
            **{key: _summary(rows, key) for key in ("psnr", "ssim", "mouth_psnr", "lmd")},
            "lmd_frames": sum(r["lmd"] is not None for r in rows),
        }
    return metrics


def add_image_extras(metrics: dict, config: EvaluateConfig, driver: Driver, ids: np.ndarray,
                     fake: list[np.ndarray], real: list[np.ndarray], speech: np.ndarray) -> None:  # fmt: skip
    """LPIPS and LSE-C/LSE-D of the full model, when their weights are given ("not computed" else)."""
    full = metrics["full"]
    full["lpips"] = full["lse_c"] = full["lse_d"] = NOT_COMPUTED
    device = driver.device
    if config.lpips_weights is not None:
        from ..model.lpips import LPIPS

        model = LPIPS.from_folder(config.lpips_weights).to(device)
        as_tensor = lambda x: torch.from_numpy(x).to(device).float() / 255  # noqa: E731
        with torch.no_grad():
            full["lpips"] = round(float(np.mean([float(model(as_tensor(f), as_tensor(r)))
                                                 for f, r in zip(fake, real)])), 4)  # fmt: skip
    if config.syncnet_weights is not None:
        from .syncnet import SyncNet, lse

        ds, scale = driver.ds, driver.size / driver.ds.size
        syncnet = SyncNet.from_file(config.syncnet_weights).to(device)
        seg = speech[round(ids[0] / ds.fps * AUDIO_RATE) :]
        boxes = [face_box(ds.tracks.landmarks2d[i], driver.size, scale) for i in ids.tolist()]
        scores = lse(syncnet, fake, seg, ds.fps, boxes)
        full["lse_c"], full["lse_d"] = scores["lse_c"], scores["lse_d"]


def write_evaluation(out: Path, config: EvaluateConfig, driver: Driver, metrics: dict,
                     results: dict[str, list], sequence: TestSequence) -> dict[str, Any]:  # fmt: skip
    """metrics.json, the config, the mouth sheet and report.html into ``out``; returns the metrics."""
    mouth_sheet(sequence.rendered, sequence.real, sequence.predicted_gap, out / MOUTH_SHEET)
    metrics = strict_json(metrics)
    write_json_atomic(out / METRICS, metrics)
    save_config(config, out)
    from .report import write_report

    write_report(out, driver, metrics, results, sequence)
    return metrics


def _predicted_gap(driver: Driver, codes: torch.Tensor, ids: np.ndarray) -> np.ndarray:
    """The inner-lip gap (mm) of the mesh the full model renders for each test frame."""
    with torch.no_grad():
        meshes = [driver.model.compose_mesh(codes[i], driver.frames.mesh(i)).cpu().numpy() for i in ids]
    return 1000 * mouth_gap(np.stack(meshes))


def _articulation(driver: Driver, speech: Speech, ids, real_open, renders: dict[str, ModeRender]) -> dict:
    """How the rendered mouth follows the real one, and the audio → motion model's lip error."""
    model, ds = driver.model, driver.ds
    tracked = torch.from_numpy(ds.tracks.mesh[ids, :N_MESH] - ds.tracks.canonical_shape[None, :N_MESH])
    with torch.no_grad():
        basis = model.basis
        error = basis.reconstruct(speech.codes[ids]) - tracked.to(basis.mean)
        lip_error = float(1000 * error[:, LIPS].norm(dim=-1).mean())
    real_range = spread(real_open)
    seams = renders["full"].seams
    row: dict[str, Any] = {
        "opening_correlation": _correlation(renders["full"].opening, real_open),
        "opening_range_ratio": _ratio(spread(renders["full"].opening), real_range),
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
    if "zero_audio" in renders:
        row["zero_audio_opening_range_ratio"] = _ratio(spread(renders["zero_audio"].opening), real_range)
    return row


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def cross_audio(driver: Driver, config: EvaluateConfig, real_open: list[float]) -> list[dict[str, Any]]:
    """Drive the model with other speakers' speech: how its mouth follows their audio energy, how wide it
    opens against the real clip, and the seam."""
    rows = []
    real_range = spread(real_open)
    for path in config.cross_audio:
        audio = read_audio(path)[: int(config.cross_seconds * AUDIO_RATE)]
        speech = driver.speech(audio)
        tracker = MouthTracker()
        opening, seams = [], []
        pose = PoseSource("replay")
        for k in range(len(speech)):
            comp = driver.render_frame(speech, k, pose)
            opening.append(mouth_opening(tracker(to_uint8(comp.image))))
            s = driver.source(k, pose)
            seams.append(seam_share(comp, driver.frames.target(s).labels.cpu().numpy()))
        tracker.close()
        energy = audio_energy(audio, len(speech), driver.fps)
        rows.append(
            {
                "audio": Path(path).name,
                "path": str(Path(path).resolve()),
                "seconds": round(len(audio) / AUDIO_RATE, 2),
                **lip_sync(energy, np.array(opening)).as_dict(),
                "opening_range_ratio": _ratio(spread(opening), real_range),
                "seam_share": round(float(np.mean(seams)), 5),
            }
        )
    return rows


def cross_video(driver: Driver, path: Path, prior: str = "builtin") -> dict[str, Any]:
    """Another person's talking-head video drives the model: its speech in, and its own tracked mouth as
    the reference, over the whole clip. The clip is first put in sync with itself as ``gstalk prepare``
    would (``prepare.sync.check_sync``, through the motion ``prior``'s predicted lips): its sound is moved
    by a clear offset, so a clip whose sound is a little late is compared where its own mouth and sound
    agree. Then the correlation of the model's predicted inner-lip gap with the gap MediaPipe tracks in
    that video (over the outer-eye-corner distance), both z-scored, at lag 0 and at the best lag within
    ±3 frames (positive: the model's mouth moves later than the real one). No rendering: the audio →
    motion model's mesh is what the renders follow. Holds the landmarks, never the frames. Raises
    :class:`GstalkError` for a video without sound under its frames."""
    from ..face.track import track_frames
    from ..media import coverage, decode_audio, probe_video, read_frames
    from ..prepare.sync import check_sync, prior_lip_gap

    fps = driver.fps
    info = probe_video(path)
    sound = decode_audio(path, AUDIO_RATE, origin=info.start)
    cover = coverage(sound, info.frames_at(fps), fps)
    if cover.kept == 0:
        raise GstalkError(
            f"no frame of {path} has sound under it", "use a clip whose sound plays with its picture"
        )
    first = cover.first
    landmarks, valid = track_frames((rgb for _, rgb in read_frames(path, fps, first, cover.stop, info)), fps)
    n = len(valid)
    predicted = prior_lip_gap(sound, first, first + n, fps, prior)
    check = check_sync(sound, landmarks, valid, first, (first, first + n), fps, 0.5, predicted=predicted)
    placed = sound.shifted(check.shift_s)
    heard = coverage(placed, first + n, fps)
    real = mouth_openings(landmarks, valid)
    frames = np.arange(first, first + n)
    real[(frames < heard.first) | (frames >= heard.stop)] = np.nan
    speech = driver.speech(placed.between(first / fps, (first + n) / fps), n_frames=n)
    canonical = driver.model.canonical_mesh
    with torch.no_grad():
        gap = mouth_gap((canonical + driver.model.basis.reconstruct(speech.codes)).cpu().numpy())
    measure = lagged_correlation(gap, real, max_lag=3)
    return {"video": Path(path).name, "path": str(Path(path).resolve()), "frames": n,
            "sync": check.as_dict(), **measure}  # fmt: skip


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
