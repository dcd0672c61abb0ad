"""How fast ``media`` reads video as a player shows it, printed as JSON: frames/s of ``read_frames`` (decode,
RGB conversion, and the display matrix / square-pixel resampling where the file asks for them) and seconds
of ``decode_audio`` per clip.

    python benchmarks/reader_speed.py                                    # the shared May clip and its cases
    python benchmarks/reader_speed.py --videos clip.mp4 --repeats 5

A turned clip pays one OpenCV transpose and/or flip per frame, an anamorphic one a wider swscale pass
(the resampling happens inside the RGB conversion); an untagged square-pixel clip pays nothing extra.
Compare the May clip with its cases. Run it alone on the machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from gstalk.bench import hardware
from gstalk.media import decode_audio, probe_video, read_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT = (
    SHARED / "video" / "may_5s_512_25fps.mp4",
    SHARED / "cases" / "rot90_phone.mp4",
    SHARED / "cases" / "anamorphic_641x479.mp4",
    SHARED / "cases" / "audio_starts_0.5s_in_sync.mp4",
)


@dataclass
class Config:
    videos: tuple[Path, ...] = field(default_factory=lambda: DEFAULT)
    """Videos to read."""
    fps: float = 25.0
    """Frame rate to read them at."""
    repeats: int = 3
    """Passes per video; the fastest is reported."""


def measure(video: Path, fps: float, repeats: int) -> dict:
    info = probe_video(video)
    frames_s, audio_s, n = [], [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        n = sum(1 for _ in read_frames(video, fps, info=info))
        frames_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        decode_audio(video, origin=info.start)
        audio_s.append(time.perf_counter() - start)
    return {
        "video": video.name,
        "stored": [info.stored_width, info.stored_height],
        "shown": [info.width, info.height],
        "turn": info.display.describe() or "none",
        "sample_aspect_ratio": str(info.display.sar),
        "frames": n,
        "frames_per_s": round(n / min(frames_s), 1),
        "audio_s": round(min(audio_s), 3),
    }


def main(config: Config) -> dict:
    rows = [measure(v, config.fps, config.repeats) for v in config.videos if v.is_file()]
    result = {"benchmark": "reader_speed", "hardware": hardware(), "results": rows}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(tyro.cli(Config))
