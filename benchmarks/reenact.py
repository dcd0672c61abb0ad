"""Video-driven reenactment, measured: does the avatar's mouth follow the driving face, and how fast is it?

For each (run, driving video) pair, the i-th video driving the i-th run (issue 25's target: one clip's
avatar driven by another shared clip's video):

1. ``gstalk render --run RUN --drive-video CLIP --size SIZE`` end to end (tracking the driving video, then
   rendering and encoding), timed; and ``gstalk render --run RUN --audio CLIP`` of the same clip at the same
   size (the speech path of a clip-trained avatar): the speed target compares the two renders' frames/s;
2. the mouth opening (MediaPipe's inner-lip gap over the eye width, ``eval.metrics``) tracked on the
   driving video's frames and on the rendered frames, and their correlation at lag 0 and at the best lag
   within ±3 frames (``eval.metrics.lagged_correlation``), for ``--drive-video`` and, with ``--pose``, for
   ``--drive-pose`` too;
3. a sheet of driving frames over rendered ones at the driver's most closed and most open mouths;
4. (``speed``) the frame path's cost in one process, driven by the video's face against driven by its
   speech (the same frames, poses and size; blocks alternating; wall and CPU ms per frame): a video-driven
   frame must cost what a speech-driven one does.

Prints JSON (with the date, the hardware and the load average before and after) on stdout.

    python benchmarks/reenact.py --runs RUN_CNN \\
        --videos ../shared/data/video/german_anchor_20s_512_25fps.mp4 --seconds 20 --out /tmp/reenact-bench
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import tyro

from gstalk.bench import hardware
from gstalk.config import RenderConfig
from gstalk.data.writer import write_image
from gstalk.drive import render_video
from gstalk.eval.metrics import MouthTracker, lagged_correlation, mouth_opening, spread
from gstalk.media import read_frames
from gstalk.media.encode import write_video
from gstalk.media.video import probe_video


@dataclasses.dataclass
class Args:
    runs: tuple[Path, ...]
    """Trained runs (the avatars)."""
    videos: tuple[Path, ...]
    """Driving videos, one per run (another person's clip each): the i-th drives the i-th run."""
    out: Path = Path("/tmp/gstalk-reenact-bench")
    """Where the renders, the cut driving clips and the sheets go."""
    seconds: float = 20.0
    """Seconds of each driving video used (cut from its start)."""
    size: int = 512
    """Render size (pixels)."""
    pose: bool = True
    """Also measure --drive-pose."""
    what: tuple[Literal["quality", "speed"], ...] = ("quality", "speed")
    """quality: the renders end to end and the mouth-opening correlation; speed: the frame path's cost,
    driven by the video against driven by its speech, in one process, interleaved."""
    speed_frames: int = 100
    """Frames per timed block of the speed comparison."""
    speed_repeats: int = 5
    """Timed blocks of each (the median is reported)."""


def load() -> list[float]:
    return [round(float(v), 2) for v in open("/proc/loadavg").read().split()[:3]]


def openings(path: Path, fps: float) -> np.ndarray:
    """(T,) MediaPipe mouth opening of every frame of a video (NaN where no face)."""
    tracker = MouthTracker()
    try:
        return np.array([mouth_opening(tracker(rgb)) for _, rgb in read_frames(path, fps)])
    finally:
        tracker.close()


def cut(video: Path, seconds: float, out: Path, fps: float = 25.0) -> Path:
    """The first ``seconds`` of ``video`` with its sound (as a player shows it), re-encoded."""
    from gstalk.media import read_audio

    frames = (rgb for _, rgb in read_frames(video, fps, 0, int(seconds * fps)))
    write_video(out, frames, fps, read_audio(video)[: int(seconds * 16_000)], 16_000)
    return out


def sheet(driving: Path, rendered: Path, opening: np.ndarray, out: Path, fps: float, n: int = 4) -> None:
    value = np.nan_to_num(opening, nan=float(np.nanmedian(opening)))
    order = np.argsort(value, kind="stable")
    picks = sorted({*order[:n].tolist(), *order[-n:].tolist()})
    top = {k: rgb for k, rgb in read_frames(driving, fps) if k in picks}
    bottom = {k: rgb for k, rgb in read_frames(rendered, fps) if k in picks}
    size = 200
    columns = [
        np.concatenate([cv2.resize(top[k], (size, size)), cv2.resize(bottom[k], (size, size))], 0)
        for k in picks
        if k in top and k in bottom
    ]
    write_image(out, np.concatenate(columns, 1))


def pair(args: Args, run: Path, video: Path) -> dict:
    work = args.out / f"{run.name}__{video.stem}"
    work.mkdir(parents=True, exist_ok=True)
    driving = cut(video, args.seconds, work / "driving.mp4")
    fps = 25.0
    real = openings(driving, fps)
    row: dict = {
        "run": str(run),
        "driving_video": str(video),
        "seconds": round(probe_video(driving).duration, 2),
        "driver_opening_range": spread(real),
    }
    modes = [("drive_video", False)] + ([("drive_pose", True)] if args.pose else [])
    for name, pose in modes:
        out = work / f"{name}.mp4"
        out.unlink(missing_ok=True)
        start = time.perf_counter()
        config = RenderConfig(run=run, drive_video=driving, drive_pose=pose, out=out, size=args.size)
        figures = render_video(dataclasses.replace(config, progress=False))
        wall = time.perf_counter() - start
        rendered = openings(out, fps)
        row[name] = {
            "render_fps": figures["fps"],
            "tracking_seconds": figures["tracking_seconds"],
            "command_seconds": round(wall, 2),
            "face_found_share": figures["face_found_share"],
            "rendered_opening_range": spread(rendered),
            "rendered_face_share": round(float(np.isfinite(rendered).mean()), 4),
            **lagged_correlation(rendered, real, max_lag=3),
        }
        if name == "drive_video":
            sheet(driving, out, real, work / "sheet.png", fps)
    speech = work / "speech.mp4"
    speech.unlink(missing_ok=True)
    figures = render_video(RenderConfig(run=run, audio=driving, out=speech, size=args.size, progress=False))
    row["speech_render_fps"] = figures["fps"]
    return row


def frame_cost(args: Args, run: Path, video: Path) -> dict:
    """The frame path's cost (render_frame through the 8-bit frame, no encoding) at ``args.size``: the
    avatar driven by ``video``'s face against driven by its speech, same frames and poses, blocks of
    ``speed_frames`` alternating, ``speed_repeats`` of each after a warm-up; wall and process CPU ms per
    frame (medians). CPU time is the fairer figure when other work shares the cores."""
    from gstalk.data.frames import to_uint8
    from gstalk.drive import Driver, PoseSource
    from gstalk.drive.reenact import Reenactment, track_driving_video
    from gstalk.media import read_audio

    driver = Driver(run, size=args.size)
    face = track_driving_video(video, driver.fps, int(args.seconds * driver.fps))
    reenact = Reenactment(driver, face, pose=PoseSource())
    speech = driver.speech(read_audio(video)[: int(args.seconds * 16_000)], n_frames=len(face))
    n = min(args.speed_frames, len(face))

    def video_block() -> None:
        for k in range(n):
            to_uint8(reenact.render(k).image)

    def speech_block() -> None:
        for k in range(n):
            to_uint8(driver.render_frame(speech, k, PoseSource()).image)

    video_block(), speech_block()  # warm-up (compilation, caches)
    times: dict[str, list[tuple[float, float]]] = {"video": [], "speech": []}
    for _ in range(args.speed_repeats):
        for name, block in (("video", video_block), ("speech", speech_block)):
            wall, cpu = time.perf_counter(), time.process_time()
            block()
            times[name].append(
                ((time.perf_counter() - wall) / n * 1000, (time.process_time() - cpu) / n * 1000)
            )
    out = {"run": str(run), "driving_video": str(video), "frames_per_block": n, "blocks": args.speed_repeats}
    for name, rows in times.items():
        wall, cpu = np.median(np.array(rows), axis=0)
        out[f"driven_by_{name}"] = {
            "wall_ms_per_frame": round(float(wall), 2),
            "cpu_ms_per_frame": round(float(cpu), 2),
            "fps": round(1000 / float(wall), 1),
        }
    out["video_over_speech_cpu"] = round(
        out["driven_by_video"]["cpu_ms_per_frame"] / out["driven_by_speech"]["cpu_ms_per_frame"], 3
    )
    return out


def main(args: Args) -> dict:
    before = load()
    started = time.strftime("%Y-%m-%d %H:%M")
    pairs = list(zip(args.runs, args.videos, strict=True))
    with contextlib.redirect_stdout(sys.stderr):  # the renders' own lines: the JSON alone on stdout
        rows = [pair(args, run, video) for run, video in pairs] if "quality" in args.what else []
        speed = [frame_cost(args, run, video) for run, video in pairs] if "speed" in args.what else []
    result = {
        "benchmark": "reenact",
        "date": started,
        "hardware": hardware(),
        "threads": os.environ.get("GSTALK_THREADS"),
        "load_before": before,
        "load_after": load(),
        "size": args.size,
        "pairs": rows,
        "frame_cost": speed,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
