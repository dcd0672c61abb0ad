"""Throughput and peak memory of `gstalk prepare`, printed as JSON.

    python benchmarks/prepare_speed.py --videos ../shared/data/video/*.mp4
    python benchmarks/prepare_speed.py --videos clip.mp4 --wide        # also a 1280x720 30 fps padded copy
    python benchmarks/prepare_speed.py --videos clip.mp4 --long-seconds 300   # also a 5-minute loop

Each run is a fresh process, so its peak resident memory is its own. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from gstalk.bench import hardware
from gstalk.media import read_audio, read_frames
from gstalk.media.encode import write_video

RUNNER = """
import json, resource, sys, time
from pathlib import Path
from gstalk.config import PrepareConfig
from gstalk.prepare import prepare
video, out, size = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
start = time.perf_counter()
prepare(PrepareConfig(video=Path(video), out=out, size=size, progress=False))
wall = time.perf_counter() - start
summary = json.loads((out / "summary.json").read_text())
print(json.dumps({"wall_s": wall, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "summary": summary}))
"""


@dataclass
class Config:
    videos: tuple[Path, ...]
    """Videos to prepare."""
    size: int = 512
    """Dataset size."""
    wide: bool = False
    """Also prepare a 1280×720, 30 fps copy of the first video, the person padded into a wide shot."""
    long_seconds: float = 0.0
    """Also prepare a copy of the first video looped back and forth to this length (0: no)."""


def make_wide(video: Path, out: Path) -> Path:
    """Pad every frame into a 1280×720 canvas (a blurred, darkened copy as the surroundings) at 30 fps."""
    import cv2

    def frames():
        for _, f in read_frames(video, 30):
            h, w = f.shape[:2]
            canvas = cv2.resize(cv2.GaussianBlur(f, (0, 0), 15), (1280, 720)) // 2
            scale = 600 / h
            small = cv2.resize(f, (int(w * scale), 600), interpolation=cv2.INTER_AREA)
            y0, x0 = 100, 700 - small.shape[1] // 2
            canvas[y0 : y0 + 600, x0 : x0 + small.shape[1]] = small
            yield canvas

    write_video(out, frames(), 30, read_audio(video))
    return out


def make_long(video: Path, out: Path, seconds: float) -> Path:
    """Loop the clip back and forth (frames and audio together) until it lasts ``seconds``."""
    frames = [f for _, f in read_frames(video, 25)]
    audio = read_audio(video)
    per_frame = 16000 // 25
    order, forward = [], True
    while len(order) < seconds * 25:
        order.extend(range(len(frames)) if forward else range(len(frames) - 1, -1, -1))
        forward = not forward
    order = order[: int(seconds * 25)]
    pieces = [audio[i * per_frame : (i + 1) * per_frame] for i in order]
    pieces = [np.pad(p, (0, per_frame - p.size)) for p in pieces]
    write_video(out, (frames[i] for i in order), 25, np.concatenate(pieces))
    return out


def run(video: Path, size: int, workdir: Path) -> dict:
    out = workdir / f"ds_{video.stem}"
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(video), str(out), str(size)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        return {"video": str(video), "error": proc.stderr.strip().splitlines()[-1:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    s = result["summary"]
    return {
        "video": video.name,
        "source": f"{s['crop']['side']}px crop",
        "frames": s["frames"],
        "size": size,
        "wall_s": round(result["wall_s"], 1),
        "frames_per_s": round(s["frames"] / result["wall_s"], 1),
        "peak_rss_mb": round(result["peak_rss_mb"]),
        "tracked_fraction": s["tracked_fraction"],
        "rotation_noise_deg": round(s["pose_jitter"]["rotation_noise_deg"], 3),
        "translation_noise_mm": round(s["pose_jitter"]["translation_noise_mm"], 2),
        "fov_deg": round(s["fov_deg"], 1),
        "seconds_per_step": s["seconds_per_step"],
        "sync": (s.get("sync") or {}).get("verdict"),
        "audio_video_offset_s": (s.get("sync") or {}).get("offset_s"),
        "face_upscale": s.get("face_upscale"),
        "warnings": s["warnings"],
    }


def main(config: Config) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        videos = list(config.videos)
        if config.wide:
            videos.append(
                make_wide(config.videos[0], work / f"{config.videos[0].stem}_wide_1280x720_30fps.mp4")
            )
        if config.long_seconds > 0:
            videos.append(
                make_long(
                    config.videos[0],
                    work / f"{config.videos[0].stem}_loop_{config.long_seconds:.0f}s.mp4",
                    config.long_seconds,
                )
            )
        for video in videos:
            rows.append(run(video, config.size, work))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    result = {"benchmark": "prepare_speed", "hardware": hardware(), "results": rows}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Config))
