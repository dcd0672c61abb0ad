"""How sharp and how fast a trained avatar is, per clip (issue 26): ``benchmarks/detail.py`` prints it.

Detail is measured on the held-out frames, each rendered as ``gstalk evaluate``'s ``full`` mode renders it
(the clip's own speech through the audio → motion model, posed by the frame itself), against the real
frame, inside the face box (every tracked landmark, plus a tenth on each side, as ``eval.metrics.face_box``):

- ``hf_ratio``: the render's high-frequency energy over the real frame's, the energy being the mean
  squared response of the 4-neighbour Laplacian on the luminance;
- ``band_ratio``: the same for the 1–3 px band, a difference of Gaussians (σ = 1 px minus σ = 3 px);
- ``hf_error``: the Laplacian energy of the difference (render − real) over the real frame's Laplacian
  energy, so that detail in the wrong place (noise, speckle, fringes) counts against the render: a
  ratio near 1 with a small error is detail where the video has it.

Each is the median over the frames. Beside them: PSNR, SSIM, mouth PSNR and LMD (``eval.metrics``, as
``gstalk evaluate`` reports them), the Gaussian count, ``gstalk render`` end to end (frames/s, H.264 +
AAC included) and the rasterizer alone on the avatar's own frames with one thread and with two.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..data.run_layout import model_dir
from ..splat import numba_backend, rasterize, threads

#: luminance weights (ITU-R BT.601) of the grey image the detail measures are taken on
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
#: the difference of Gaussians' two widths, in pixels: it keeps the structures of 1 to 3 px
BAND_SIGMAS = (1.0, 3.0)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 luminance in [0, 1] of an (H, W, 3) uint8 RGB image."""
    return (rgb.astype(np.float32) / 255.0) @ LUMA


def laplacian(grey: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplacian (H, W) of a float32 image, edges reflected (OpenCV's ``ksize=1``)."""
    return cv2.Laplacian(grey, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT_101)


def band(grey: np.ndarray, sigmas: tuple[float, float] = BAND_SIGMAS) -> np.ndarray:
    """The difference of Gaussians G(σ₁) − G(σ₂) of a float32 image: structure between σ₁ and σ₂ pixels."""
    fine, coarse = (cv2.GaussianBlur(grey, (0, 0), s, borderType=cv2.BORDER_REFLECT_101) for s in sigmas)
    return fine - coarse


def clip_box(box: tuple[int, int, int], height: int, width: int) -> tuple[slice, slice]:
    """Rows and columns of a square box (x0, y0, side) that lie in an image of the given size."""
    x0, y0, side = box
    return slice(max(y0, 0), min(y0 + side, height)), slice(max(x0, 0), min(x0 + side, width))


def detail_ratios(render: np.ndarray, real: np.ndarray, box: tuple[slice, slice]) -> dict[str, float]:
    """``hf_ratio``, ``band_ratio`` and ``hf_error`` (module docstring) of one rendered frame against the
    real one, both (H, W, 3) uint8, inside ``box`` (rows, columns). The filters see the whole image, so the
    box's edges are filtered as inside it."""
    a, b = luminance(render), luminance(real)
    lap_a, lap_b, lap_d = laplacian(a)[box], laplacian(b)[box], laplacian(a - b)[box]
    band_a, band_b = band(a)[box], band(b)[box]
    real_hf = max(float(np.mean(lap_b**2)), 1e-12)
    return {
        "hf_ratio": float(np.mean(lap_a**2)) / real_hf,
        "band_ratio": float(np.mean(band_a**2)) / max(float(np.mean(band_b**2)), 1e-12),
        "hf_error": float(np.mean(lap_d**2)) / real_hf,
    }


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return round(float(np.median(values)), 4) if values else None


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return round(float(np.mean(values)), 4) if values else None


def quality(run: Path, size: int | None = None, max_frames: int | None = None) -> dict[str, Any]:
    """Detail, PSNR, SSIM, mouth PSNR and LMD of ``run`` on its dataset's held-out frames (``full`` mode of
    ``gstalk evaluate``); ``per_frame`` holds every frame's figures."""
    from ..drive import Driver
    from ..eval.evaluate import render_mode, score_frames, track_sequence
    from ..eval.metrics import face_box

    driver = Driver(run, size=size)
    ids = driver.ds.test_ids[:max_frames] if max_frames else driver.ds.test_ids
    speech = driver.speech(features=driver.ds.audio_features)
    real = [driver.frames.image(i) for i in ids.tolist()]
    renders = render_mode(driver, ids, "full", speech, None)
    rows = score_frames(driver, ids, real, track_sequence(real), renders.images, renders.landmarks)
    scale = driver.size / driver.ds.size
    for row, i, fake, ref in zip(rows, ids.tolist(), renders.images, real):
        box = clip_box(face_box(driver.ds.tracks.landmarks2d[i], driver.size, scale), *ref.shape[:2])
        row.update(detail_ratios(fake, ref, box))
    return {
        "test_frames": len(ids),
        "size": driver.size,
        "gaussians": len(driver.model.head) + len(driver.model.mouth),
        **{k: _median(rows, k) for k in ("hf_ratio", "band_ratio", "hf_error")},
        **{k: _mean(rows, k) for k in ("psnr", "ssim", "mouth_psnr", "lmd")},
        "per_frame": rows,
    }


def rasterizer_threads(run: Path, size: int, frames: int = 4, repeats: int = 15) -> dict[str, Any]:
    """The rasterizer alone on the avatar's own frames (the first ``frames`` held-out frames, face and
    mouth interior in one pass over the real-pixel layer, as ``gstalk render`` draws them), with one thread
    and with two: median milliseconds per frame over ``repeats`` rounds, its stages, and the speed-up.
    Also a training step's rasterizer forward and backward (two passes, as training renders)."""
    from ..drive import Driver
    from ..model.talking_head import render_portrait

    driver = Driver(run, size=size)
    ids = driver.ds.test_ids[:frames].tolist()
    speech = driver.speech(features=driver.ds.audio_features)
    scenes = []
    for i in ids:
        frame = driver.model(driver.drive(speech, i, i))
        scenes.append((frame, driver.frames.camera(i), driver.layer(i)))
    result: dict[str, Any] = {"size": size, "frames": ids}
    for count in (1, 2):
        with _thread_count(count):
            render_ms, stages = _timed_renders(scenes, repeats)
            train_ms = _timed_training(scenes, max(3, repeats // 3), render_portrait)
        result[f"threads_{count}"] = {
            "render_ms": render_ms,
            "render_stages_ms": stages,
            "train_ms": train_ms,
        }
    one, two = result["threads_1"], result["threads_2"]
    result["render_speedup"] = round(one["render_ms"] / two["render_ms"], 3)
    result["train_speedup"] = round(one["train_ms"] / two["train_ms"], 3)
    return result


@contextlib.contextmanager
def _thread_count(count: int):
    threads.configure(count)
    try:
        yield
    finally:
        threads.configure()


def _timed_renders(scenes, repeats: int) -> tuple[float, dict[str, float]]:
    """Median ms per frame of rendering every scene, over ``repeats`` rounds after a warm-up round."""

    def render_all():
        with torch.no_grad():
            for frame, camera, layer in scenes:
                both, groups = frame.both()
                rasterize(*both, camera, background=layer, groups=groups)

    render_all()
    totals, clocks = [], []
    for _ in range(repeats):
        with numba_backend.stage_clock() as clock:
            start = time.perf_counter()
            render_all()
            totals.append(time.perf_counter() - start)
        clocks.append(dict(clock))
    n = len(scenes)
    stages = {k: round(1000 * statistics.median(c.get(k, 0.0) for c in clocks) / n, 3) for k in clocks[0]}
    return round(1000 * statistics.median(totals) / n, 3), stages


def _timed_training(scenes, repeats: int, render_portrait) -> float:
    """Median ms per frame of a training step's two-pass render and its backward (loss: image sum)."""
    leaves = []
    for frame, camera, layer in scenes:
        sets = [
            type(s)(*(t.detach().clone().requires_grad_() for t in s.tensors()))
            for s in (frame.head, frame.mouth)
        ]
        copy = type(frame)(*sets)
        leaves.append((copy, camera, layer))

    def step_all():
        for frame, camera, layer in leaves:
            comp = render_portrait(frame, camera, layer, fused=False)
            (comp.image.sum() + comp.head_alpha.sum()).backward()

    step_all()
    totals = []
    for _ in range(repeats):
        start = time.perf_counter()
        step_all()
        totals.append(time.perf_counter() - start)
    return round(1000 * statistics.median(totals) / len(scenes), 3)


def end_to_end(run: Path, size: int, seconds: float, work: Path) -> dict[str, Any]:
    """``gstalk render --size SIZE`` (``drive.video.render_video``) of the first ``seconds`` of the run's
    own clip's speech, written to an mp4: frames/s over the frames (encoding included), CPU ms per frame."""
    import soundfile

    from ..config import RenderConfig
    from ..data.dataset import load_dataset
    from ..drive.video import render_video
    from ..media import AUDIO_RATE, read_audio
    from ..model.checkpoint import load_model

    _, meta = load_model(model_dir(run), "cpu")
    speech = read_audio(load_dataset(meta["dataset"]).audio_path)[: int(seconds * AUDIO_RATE)]
    audio = work / "speech.wav"
    soundfile.write(audio, speech, AUDIO_RATE)
    with contextlib.redirect_stdout(sys.stderr):  # stdout carries only the JSON
        figures = render_video(RenderConfig(run=run, audio=audio, out=work / f"render_{size}.mp4", size=size,
                                            progress=False, yes=True))  # fmt: skip
    return {
        "size": size,
        "frames": figures["frames"],
        "fps": figures["fps"],
        "cpu_ms_per_frame": round(1000 * figures["cpu_seconds"] / figures["frames"], 2),
    }


def load_average() -> str:
    """The first three fields of /proc/loadavg (1, 5 and 15 minutes), or "unknown"."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def detail_benchmark(
    runs: dict[str, Path],
    sizes: tuple[int, ...] = (512, 256),
    render_seconds: float = 10.0,
    rasterizer_size: int = 512,
    max_frames: int | None = None,
) -> dict[str, Any]:
    """Every figure of the module docstring for each named run, as one JSON-ready dict (each clip's
    figures are also printed to stderr as they come)."""
    from . import hardware

    result: dict[str, Any] = {
        "benchmark": "detail",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hardware": hardware(),
        "load_before": load_average(),
        "clips": {},
    }
    for name, run in runs.items():
        start = time.perf_counter()
        clip: dict[str, Any] = {"run": str(run), "quality": quality(run, max_frames=max_frames)}
        clip["rasterizer"] = rasterizer_threads(run, rasterizer_size)
        with tempfile.TemporaryDirectory() as tmp:
            clip["render"] = [end_to_end(run, size, render_seconds, Path(tmp)) for size in sizes]
        clip["seconds"] = round(time.perf_counter() - start, 1)
        summary = {k: v for k, v in clip["quality"].items() if k != "per_frame"}
        print(json.dumps({name: {**summary, "rasterizer_speedup": clip["rasterizer"]["render_speedup"],
                                 "render_fps": {r["size"]: r["fps"] for r in clip["render"]}}}),
              file=sys.stderr, flush=True)  # fmt: skip
        result["clips"][name] = clip
    result["load_after"] = load_average()
    return result


__all__ = ["band", "clip_box", "detail_benchmark", "detail_ratios", "laplacian", "luminance", "quality"]
