"""``gstalk evaluate --reference-video CLIP``: MGGTalk's self-reenactment protocol, for any avatar.

The avatar is rendered at CLIP's tracked poses, over CLIP's own real pixels, and compared with CLIP's
frames. The avatar need not have seen CLIP: it may be a clip-trained run evaluated on another clip of its
person, or on the held-out tail of its own clip, and later a one-shot or few-shot avatar. What makes the
frames comparable (docs/architecture.md, "Evaluating against a reference video"):

1. **CLIP is prepared** like any training clip (``prepare``: the one crop, the tracked mesh, head poses,
   region labels and a background plate), into a temporary folder removed afterwards; or CLIP is already
   a dataset folder ``gstalk prepare`` made (prepare once, evaluate often). Its frames, poses and layers
   are read through ``data.frames.FrameData`` as the avatar's own are.
2. **One head frame.** The avatar's canonical head frame is aligned to CLIP's on the rigid landmarks
   (``face.transfer.align_heads``, a similarity), so CLIP frame i's camera ``W_i`` sees the avatar's head
   where it sees CLIP's: the camera is ``W_i`` composed with the alignment, made rigid (a similarity's
   scale only scales the depth, which perspective divides away).
3. **Its face, relative to its neutral.** CLIP's tracked mesh of frame i (fitted to its landmarks, as
   training frames are) moves the avatar's neutral by its displacement from CLIP's neutral
   (``face.transfer``): in full with ``--drive-video`` (mode ``face``), or for the upper face only, the
   lower face coming from CLIP's speech through the avatar's audio → motion model (mode ``speech``), or
   from silence (mode ``silence``, the baseline).
4. **Over CLIP's real pixels**: hair, neck, torso and background are CLIP frame i's own (the real-pixel
   layer, its head regions filled from CLIP's background plate), as the held-out evaluation does.

Scores per mode, on the chosen frames (``--reference-frames``: ``tail``, the last 1/11 of the clip as in
the one-shot protocol; ``all``; ``test``, the prepared clip's held-out split; or ``START:STOP``): PSNR and
SSIM of the whole frame, PSNR of the head regions and of the mouth crop, LMD, and the opening correlation
(rendered against real inner-lip gap over eye width, MediaPipe on both) with its range ratio.

Evaluated with its own dataset as CLIP (``--reference-video DATASET --reference-frames test``), a
clip-trained run reproduces the held-out evaluation's ``full`` mode exactly (the alignment is then the
identity); ``tests/test_reenact.py`` checks it.
"""

from __future__ import annotations

import html
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..config import EvaluateConfig, PrepareConfig, save_config
from ..data.dataset import Dataset, load_dataset
from ..data.frames import FrameData, to_uint8
from ..data.layout import MANIFEST
from ..data.run_layout import METRICS, MOUTH_SHEET, REPORT, SIDE_BY_SIDE
from ..data.writer import write_image
from ..drive.driver import Driver
from ..drive.reenact import dataset_neutral
from ..errors import GstalkError
from ..face.transfer import Similarity, align_heads, transfer_expression
from ..fileio import atomic_path, strict_json, write_json_atomic, write_text_atomic
from ..media import read_audio
from ..media.audio import AUDIO_RATE
from ..media.encode import write_video
from ..model.talking_head import Drive
from .evaluate import _correlation, _ratio, track_sequence
from .metrics import LMD_SIZE, lmd, mouth_box, mouth_opening, mouth_psnr, psnr, spread, ssim

#: the one-shot protocol's test part: the last 1/11 of the clip (as the papers hold out)
TAIL_SHARE = 1 / 11
#: side of a frame on the report's sheet, pixels at most
SHEET_TILE = 256


def reference_ids(ds: Dataset, spec: str) -> np.ndarray:
    """The frames of the reference dataset ``spec`` names, with a tracked face: ``tail`` (its last 1/11),
    ``all``, ``test`` (its held-out split) or ``START:STOP`` (frame indices, either may be empty).
    Raises GstalkError for another spec, or when fewer than 2 frames are left."""
    n = ds.n_frames
    if spec == "tail":
        ids = np.arange(n - max(2, round(n * TAIL_SHARE)), n)
    elif spec == "all":
        ids = np.arange(n)
    elif spec == "test":
        ids = np.asarray(ds.test_ids)
    else:
        try:
            start, stop = (int(v) if v.strip() else None for v in spec.split(":"))
        except ValueError:
            raise GstalkError(
                f"--reference-frames {spec!r} names no frames",
                "use tail (the last 1/11), all, test, or START:STOP frame indices such as 0:250",
            ) from None
        ids = np.arange(n)[slice(start, stop)]
    ids = ids[(ids >= 0) & (ids < n)]
    ids = ids[ds.valid[ids]]
    if len(ids) < 2:
        raise GstalkError(
            f"--reference-frames {spec} leaves {len(ids)} frame(s) with a face in {ds.root}; at least 2 "
            "are needed",
            "pick a larger part of the clip (--reference-frames all, or START:STOP)",
        )
    return ids


def aligned_camera(world_to_cam: np.ndarray, avatar_to_clip: Similarity) -> np.ndarray:
    """(4, 4) the rigid camera that sees the avatar's head frame as the clip's camera ``world_to_cam``
    (4, 4) sees the clip's head frame, given the similarity avatar → clip: ``W ∘ (s R · + c)`` divided by
    s, which projects every point to the same pixel."""
    w = np.asarray(world_to_cam, np.float64)
    out = np.eye(4)
    out[:3, :3] = w[:3, :3] @ avatar_to_clip.rotation
    out[:3, 3] = (w[:3, :3] @ avatar_to_clip.translation + w[:3, 3]) / avatar_to_clip.scale
    return out


@dataclass
class ReferenceClip:
    """The reference clip as the avatar sees it: frames, cameras and layers, and its face moved into the
    avatar's head frame."""

    ds: Dataset
    frames: FrameData
    ids: np.ndarray
    meshes: np.ndarray
    """(len(ids), 468, 3) float32: the clip's tracked face on the avatar's neutral, in the avatar's head
    frame."""
    cameras: np.ndarray
    """(len(ids), 4, 4) float32: each frame's camera on the avatar's head frame."""
    alignment: Similarity
    """Avatar's head frame → the clip's."""


def reference_clip(driver: Driver, ds: Dataset, ids: np.ndarray) -> ReferenceClip:
    """The frames ``ids`` of the prepared clip ``ds``, posed and moved for ``driver``'s avatar."""
    frames = FrameData(ds, driver.size, driver.device, cache=False)
    avatar_to_clip = align_heads(driver.ds.tracks.canonical_shape, ds.tracks.canonical_shape)
    clip_to_avatar = align_heads(ds.tracks.canonical_shape, driver.ds.tracks.canonical_shape)
    avatar_neutral = dataset_neutral(driver.ds, driver.frames.meshes)
    meshes = transfer_expression(
        frames.meshes[ids], dataset_neutral(ds, frames.meshes), avatar_neutral, clip_to_avatar
    )
    cameras = np.stack([aligned_camera(ds.world_to_cam[i], avatar_to_clip) for i in ids]).astype(np.float32)
    return ReferenceClip(ds, frames, ids, meshes, cameras, avatar_to_clip)


@dataclass
class ModeFrames:
    images: list[np.ndarray]
    landmarks: list[np.ndarray | None]
    opening: list[float]


def render_reference(
    driver: Driver, clip: ReferenceClip, mode: str, codes: torch.Tensor | None, bar: tqdm | None = None
) -> ModeFrames:
    """The clip's frames rendered by the avatar in ``mode``: ``face`` (the clip's whole face), or
    ``speech``/``silence`` (the upper face from the clip, the lower face from ``codes`` (T, K) of every
    clip frame). Through :meth:`Driver.render_frame`, with the clip's camera and real-pixel layer."""
    model = driver.model
    images = []
    for j, i in enumerate(clip.ids.tolist()):
        with torch.no_grad():
            upper = torch.from_numpy(clip.meshes[j]).to(model.canonical_mesh)
            if mode == "face":
                drive = Drive(upper, None, model.basis.project(upper - model.canonical_mesh))
            else:
                drive = Drive(model.compose_mesh(codes[i], upper), None, codes[i])
        camera = clip.frames.camera(i)
        camera = camera.__class__(
            torch.from_numpy(clip.cameras[j]).to(camera.world_to_cam),
            camera.intrinsics,
            camera.width,
            camera.height,
        )
        comp = driver.render_frame(None, i, drive=drive, camera=camera, layer=clip.frames.layer(i))
        images.append(to_uint8(comp.image))
        if bar is not None:
            bar.update()
    landmarks = track_sequence(images)
    return ModeFrames(images, landmarks, [mouth_opening(lm) for lm in landmarks])


def head_psnr(real: np.ndarray, fake: np.ndarray, mask: np.ndarray) -> float | None:
    """PSNR (dB) over the pixels of ``mask`` (H, W) bool; None when it is empty."""
    if not mask.any():
        return None
    err = (real.astype(np.float64) - fake.astype(np.float64))[mask]
    mse = float((err**2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def score_reference(
    clip: ReferenceClip, real: list[np.ndarray], real_lms: list, fake: ModeFrames, size: int
) -> list[dict[str, Any]]:
    """Per frame: PSNR, SSIM, head-region PSNR, mouth-crop PSNR and LMD of a mode against the clip."""
    scale = size / clip.ds.size
    rows = []
    for j, i in enumerate(clip.ids.tolist()):
        box = mouth_box(clip.ds.tracks.landmarks2d[i], size, scale)
        head = clip.frames.target(i).head_mask.cpu().numpy()
        rows.append(
            {
                "frame": i,
                "psnr": psnr(real[j], fake.images[j]),
                "ssim": ssim(real[j], fake.images[j]),
                "head_psnr": head_psnr(real[j], fake.images[j], head),
                "mouth_psnr": mouth_psnr(real[j], fake.images[j], box),
                "lmd": lmd(real_lms[j], fake.landmarks[j]),
            }
        )
    return rows


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and np.isfinite(r[key])]
    return round(float(np.mean(vals)), 4) if vals else None


MODE_MEANING = {
    "speech": "the lower face from the clip's speech (the avatar's audio → motion model), the upper face "
    "(blinks, brows) from the clip's tracked face",
    "face": "the whole face from the clip's tracked face (--drive-video: self-reenactment)",
    "silence": "as speech, with silence instead of the clip's speech (the baseline)",
}


def evaluate_reference(config: EvaluateConfig, out: Path) -> dict[str, Any]:
    """Evaluate ``config.run`` against ``config.reference_video`` (a video, prepared into
    ``out/.reference`` and removed after, or a prepared dataset) into the folder ``out`` (the evaluation's
    temporary folder): metrics.json, config.json, mouth_sheet.png, side_by_side.mp4 and report.html.
    Returns the metrics.

    Raises GstalkError when the reference cannot be prepared (no face, too short, no sound) or its frame
    rate differs from the avatar's."""
    start = time.perf_counter()
    driver = Driver.for_config(config)
    source = Path(config.reference_video)
    if (source / MANIFEST).is_file():
        return _evaluate_on(config, out, driver, load_dataset(source), start)
    from ..prepare import prepare

    # inside the evaluation's own temporary folder: removed with it if anything fails (or by the next run
    # if this one is killed), and before it is moved into place
    folder = out / ".reference"
    try:
        prepared = prepare(
            PrepareConfig(
                video=source,
                out=folder,
                fps=driver.fps,
                size=driver.ds.size,
                audio_features="logmel",
                min_seconds=1.0,
                device="cpu",
                progress=config.progress,
            )
        )
        return _evaluate_on(config, out, driver, load_dataset(prepared), start)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _evaluate_on(config: EvaluateConfig, out: Path, driver: Driver, ds: Dataset, start: float) -> dict:
    if abs(ds.fps - driver.fps) > 1e-6:
        raise GstalkError(
            f"the reference {ds.root} is at {ds.fps:g} fps, the avatar at {driver.fps:g}",
            f"prepare the reference with --fps {driver.fps:g}",
        )
    ids = reference_ids(ds, config.reference_frames)
    if config.max_frames:
        ids = ids[: config.max_frames]
    clip = reference_clip(driver, ds, ids)
    speech = read_audio(ds.audio_path)
    modes = ["speech", *(["face"] if config.drive_video else []), *(["silence"] if config.baselines else [])]
    if ds.audio_spec == driver.ds.audio_spec:  # stored the avatar's way (e.g. its own clip): as trained
        codes = {"speech": driver.speech(features=ds.audio_features).codes}
    else:
        codes = {"speech": driver.speech(speech, n_frames=ds.n_frames).codes}
    if "silence" in modes:
        silence = driver.frames.silence
        codes["silence"] = driver.speech(
            features=np.broadcast_to(silence, (ds.n_frames, *silence.shape))
        ).codes
    real = [clip.frames.image(i) for i in ids.tolist()]
    real_lms = track_sequence(real)
    real_open = [mouth_opening(lm) for lm in real_lms]
    bar = tqdm(total=len(ids) * len(modes), desc="evaluate", unit="frame", disable=not config.progress)
    renders = {m: render_reference(driver, clip, m, codes.get(m), bar) for m in modes}
    bar.close()
    results = {m: score_reference(clip, real, real_lms, r, driver.size) for m, r in renders.items()}
    real_range = spread(real_open)
    cos = (np.trace(clip.alignment.rotation) - 1) / 2
    metrics: dict[str, Any] = {
        "protocol": "reference video (MGGTalk's self-reenactment): the avatar rendered at the clip's "
        "tracked poses, over its real pixels, compared with its frames",
        "run": str(driver.run),
        "dataset": str(driver.ds.root),
        "reference": str(Path(config.reference_video).resolve()),
        "reference_frames": config.reference_frames,
        "frames": [int(ids[0]), int(ids[-1])],
        "test_frames": len(ids),
        "size": driver.size,
        "lmd_pixels_at": LMD_SIZE,
        "alignment": {
            "scale": round(clip.alignment.scale, 4),
            "rotation_deg": round(float(np.degrees(np.arccos(np.clip(cos, -1, 1)))), 3),
        },
        "real_opening_range": real_range,
    }
    for mode, rows in results.items():
        metrics[mode] = {
            "driven_by": MODE_MEANING[mode],
            **{key: _mean(rows, key) for key in ("psnr", "ssim", "head_psnr", "mouth_psnr", "lmd")},
            "lmd_frames": sum(r["lmd"] is not None for r in rows),
            "opening_correlation": _correlation(renders[mode].opening, real_open),
            "opening_range_ratio": _ratio(spread(renders[mode].opening), real_range),
        }
    metrics["seconds"] = round(time.perf_counter() - start, 1)
    metrics = strict_json(metrics)
    _sheet(out / MOUTH_SHEET, real, renders, real_open)
    seg = speech[round(ids[0] / ds.fps * AUDIO_RATE) : round((ids[-1] + 1) / ds.fps * AUDIO_RATE)]
    shown = [m for m in ("speech", "face") if m in renders]
    with atomic_path(out / SIDE_BY_SIDE) as tmp:
        pairs = (
            np.concatenate([real[j], *(renders[m].images[j] for m in shown)], 1) for j in range(len(ids))
        )
        write_video(tmp, pairs, ds.fps, seg, AUDIO_RATE)
    write_json_atomic(out / METRICS, metrics)
    save_config(config, out)
    _report(out, metrics, modes, shown)
    if config.progress:
        tqdm.write(
            " · ".join(
                f"{m}: PSNR {metrics[m]['psnr']}, LMD {metrics[m]['lmd']}, opening correlation "
                f"{metrics[m]['opening_correlation']}"
                for m in modes
            )
        )
    return metrics


def _sheet(
    path: Path, real: list[np.ndarray], renders: dict[str, ModeFrames], opening: list[float], n: int = 4
) -> None:
    """Columns at the clip's most closed and most open real mouths: the real frame, then each mode."""
    value = np.asarray(opening, np.float64)
    value = np.nan_to_num(value, nan=float(np.nanmedian(value)) if np.isfinite(value).any() else 0.0)
    order = np.argsort(value, kind="stable")
    picks = [*order[:n], *order[-n:]] if len(order) >= 2 * n else list(order)
    side = min(real[0].shape[0], SHEET_TILE)

    def tile(image: np.ndarray, label: str) -> np.ndarray:
        if image.shape[0] != side:
            image = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        else:
            image = image.copy()  # the label is drawn on a copy: the frames go on to the video
        cv2.putText(image, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        return image

    columns = [
        np.concatenate([tile(real[j], "real"), *(tile(r.images[j], m) for m, r in renders.items())], 0)
        for j in picks
    ]
    with atomic_path(path) as tmp:
        write_image(tmp, np.concatenate(columns, 1), ext=".png")


def _report(out: Path, metrics: dict[str, Any], modes: list[str], shown: list[str]) -> None:
    import base64

    keys = ("psnr", "ssim", "head_psnr", "mouth_psnr", "lmd", "opening_correlation", "opening_range_ratio")
    head = "".join(f"<th>{html.escape(m)}</th>" for m in modes)
    rows = "".join(
        f"<tr><th>{k}</th>" + "".join(f"<td>{metrics[m].get(k)}</td>" for m in modes) + "</tr>" for k in keys
    )
    meaning = "".join(f"<li><b>{m}</b>: {html.escape(MODE_MEANING[m])}</li>" for m in modes)
    sheet = base64.b64encode((out / MOUTH_SHEET).read_bytes()).decode("ascii")
    video = base64.b64encode((out / SIDE_BY_SIDE).read_bytes()).decode("ascii")
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>gstalk reference evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
img,video{{max-width:100%}}</style></head><body>
<h1>gstalk evaluation against a reference video</h1>
<p>Run <code>{html.escape(metrics["run"])}</code>, reference <code>{html.escape(metrics["reference"])}</code>,
frames {metrics["frames"][0]}–{metrics["frames"][1]} ({metrics["test_frames"]} with a face,
--reference-frames {html.escape(metrics["reference_frames"])}) at {metrics["size"]}². LMD in pixels at
{metrics["lmd_pixels_at"]}². {html.escape(metrics["protocol"])}.</p>
<table><tr><th></th>{head}</tr>{rows}</table><ul>{meaning}</ul>
<h2>At the clip's most closed and most open mouths</h2><img src="data:image/png;base64,{sheet}">
<h2>Real | {" | ".join(html.escape(m) for m in shown)}</h2>
<video controls loop preload="auto" src="data:video/mp4;base64,{video}"></video>
</body></html>"""
    write_text_atomic(out / REPORT, body)
