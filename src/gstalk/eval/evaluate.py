"""``gstalk evaluate``: metrics on the held-out test frames, baselines, cross-audio lip sync, a report.

Each test frame is re-rendered from its own camera, real-pixel layer, expression and audio, and compared
with the real frame. The same is done for two baselines: the static head (no deformation) and the full
model driven with silence (zeroed audio); the full model must beat both on the mouth. Cross-audio: the
model is driven by other speakers' speech and the lip-sync measure is taken on its output.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..config import EvaluateConfig, save_config
from ..data.frames import to_uint8
from ..device import pick_device
from ..drive.driver import Driver, PoseSource
from ..errors import GstalkError
from ..fileio import write_json_atomic
from ..media import AUDIO_RATE, read_audio
from ..model.checkpoint import load_model
from ..model.talking_head import render_portrait
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
    ssim,
)

NOT_COMPUTED = "not computed: weights missing"


@torch.no_grad()
def render_test_frame(driver: Driver, i: int, mode: str = "full", static_model=None) -> np.ndarray:
    """Frame i of the dataset re-rendered: ``full``, ``zero_audio`` or ``static`` (the model saved after
    the static stage when given, else the final model's canonical head)."""
    data = driver.frames
    if mode == "static":
        frame = (static_model or driver.model)(None)
    else:
        frame = driver.model(data.condition(i, zero_audio=mode == "zero_audio"))
    comp = render_portrait(frame, data.camera(i), data.target(i).layer, backend=driver.backend)
    return to_uint8(comp.image)


@dataclass
class TestSequence:
    """The test frames as evaluated: what the report shows."""

    ids: np.ndarray
    real: list[np.ndarray]
    rendered: list[np.ndarray]
    energy: np.ndarray  # audio dB per frame
    real_open: list[float]
    rendered_open: list[float]
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


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    start = time.perf_counter()
    device = pick_device(config.device)
    driver = Driver(config.run, config.dataset, config.size, device, config.backend)
    ds = driver.ds
    out = Path(config.out) if config.out is not None else Path(config.run) / "eval"
    out.mkdir(parents=True, exist_ok=True)
    ids = ds.test_ids[: config.max_frames] if config.max_frames else ds.test_ids
    if len(ids) == 0:
        raise GstalkError(
            f"the dataset {ds.root} has no usable test frames", "prepare it with --test-fraction > 0"
        )
    scale = driver.size / ds.size
    lpips_model = None
    if config.lpips_weights is not None:
        from ..model.lpips import LPIPS

        lpips_model = LPIPS.from_folder(config.lpips_weights).to(device)
    modes = ("full", "zero_audio", "static") if config.baselines else ("full",)
    static_model, static_source = None, "the final model's canonical head (no run/stages/static)"
    if config.baselines and (Path(config.run) / "stages" / "static" / "checkpoint.json").is_file():
        static_model = load_model(Path(config.run) / "stages" / "static", device)[0].eval()
        static_source = "the model saved after the static stage"
    real_frames = [driver.frames.image(i) for i in ids.tolist()]
    real_lms = track_sequence(real_frames)
    real_open = [mouth_opening(lm) for lm in real_lms]
    results: dict[str, list[dict[str, Any]]] = {}
    rendered_frames: list[np.ndarray] = []
    rendered_open: list[float] = []
    bar = tqdm(total=len(ids) * len(modes), desc="evaluate", unit="frame", disable=not config.progress)
    for mode in modes:
        fakes = []
        for i in ids.tolist():
            fakes.append(render_test_frame(driver, i, mode, static_model))
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
        results[mode] = rows
        if mode == "full":
            rendered_frames = fakes
            rendered_open = [mouth_opening(lm) for lm in fake_lms]
    bar.close()

    speech = read_audio(ds.audio_path)
    energy_all = audio_energy(speech, ds.n_frames, ds.fps)
    energy = energy_all[ids]
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
        scores = lse(syncnet, rendered_frames, seg, ds.fps, boxes)
        metrics["full"]["lse_c"], metrics["full"]["lse_d"] = scores["lse_c"], scores["lse_d"]
    metrics["lip_sync"] = {
        "measure": "Pearson correlation of per-frame audio energy (dB) and MediaPipe mouth opening, "
        "at the best offset within ±5 frames",
        "real": lip_sync(energy, np.array(real_open)).as_dict(),
        "rendered": lip_sync(energy, np.array(rendered_open)).as_dict(),
    }
    metrics["cross_audio"] = cross_audio(driver, config, out)
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    write_json_atomic(out / "metrics.json", metrics)
    save_config(config, out)
    from .report import write_report

    sequence = TestSequence(ids, real_frames, rendered_frames, energy, real_open, rendered_open, speech)
    write_report(out, driver, metrics, results, sequence)
    if config.progress:
        tqdm.write(f"gstalk evaluate: metrics in {out / 'metrics.json'}, report in {out / 'report.html'}")
    return metrics


def cross_audio(driver: Driver, config: EvaluateConfig, out: Path) -> list[dict[str, Any]]:
    """Drive the model with other speakers' speech; the lip-sync measure on what it renders."""
    rows = []
    for path in config.cross_audio:
        speech = read_audio(path)[: int(config.cross_seconds * AUDIO_RATE)]
        feats = driver.features(speech, speech_model=config.speech_model)
        tracker = MouthTracker()
        opening = [mouth_opening(tracker(f)) for f in driver.render(feats, PoseSource("replay"))]
        tracker.close()
        energy = audio_energy(speech, len(feats), driver.fps)
        rows.append(
            {
                "audio": Path(path).name,
                "seconds": round(len(speech) / AUDIO_RATE, 2),
                **lip_sync(energy, np.array(opening)).as_dict(),
            }
        )
    return rows
