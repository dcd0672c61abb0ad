"""``gstalk render``: a whole audio file to an mp4 with that audio muxed in."""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from ..config import RenderConfig, save_config
from ..errors import GstalkError
from ..fileio import atomic_path
from ..media import read_audio
from ..media.audio import AUDIO_RATE, is_silent
from ..media.encode import write_video
from .driver import Driver, PoseSource

MUX_RATE = 48_000


def render_video(config: RenderConfig) -> dict:
    """Render ``config.audio`` through the run; returns figures (frames, seconds, frames/s)."""
    speech = read_audio(config.audio, max_seconds=config.max_audio_seconds)
    if is_silent(speech):
        raise GstalkError(f"{config.audio} is silent", "pass the speech you want the person to say")
    driver = Driver(config.run, config.dataset, config.size, config.device, config.backend)
    features = driver.features(speech, speech_model=config.speech_model)
    n = len(features)
    if n < 1:
        raise GstalkError(f"{config.audio} is shorter than one video frame", "pass a longer audio file")
    pose = PoseSource(config.pose, config.still_frame, config.yaw_deg, config.pitch_deg)
    mux = read_audio(config.audio, rate=MUX_RATE, max_seconds=config.max_audio_seconds)
    bar = tqdm(total=n, desc="render", unit="frame", disable=not config.progress)

    def frames():
        for frame in driver.render(features, pose):
            bar.update()
            yield frame

    start = time.perf_counter()
    out = Path(config.out)
    with atomic_path(out) as tmp:
        written = write_video(tmp, frames(), driver.fps, mux[: round(n / driver.fps * MUX_RATE)], MUX_RATE)
    seconds = time.perf_counter() - start
    bar.close()
    save_config(config, out.parent, name=out.stem + ".config.json")
    figures = {
        "frames": written,
        "seconds": round(seconds, 2),
        "fps": round(written / seconds, 2),
        "audio_seconds": round(len(speech) / AUDIO_RATE, 2),
        "out": str(out),
    }
    print(
        f"gstalk render: {written} frames in {seconds:.1f} s ({figures['fps']} frames/s, "
        f"encoding included) -> {out}",
        flush=True,
    )
    return figures
