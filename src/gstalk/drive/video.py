"""``gstalk render``: a whole audio file to an mp4 with that audio muxed in."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

from ..config import RenderConfig, save_config
from ..errors import GstalkError
from ..fileio import atomic_path
from ..media import read_audio
from ..media.audio import AUDIO_RATE, is_silent, resample
from ..media.encode import write_video
from ..outputs import check_free_space, claim_output
from .driver import Driver, PoseSource, Speech

MUX_RATE = 48_000


#: output extensions and the container each gets (all carry H.264 video and AAC audio)
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: disk per output pixel and frame at CRF 18 (measured below 0.1 bit on talking heads; with a margin),
#: plus the AAC track's 128 kbit/s
VIDEO_BITS_PER_PIXEL, AUDIO_BITS_PER_SECOND = 0.3, 128_000
#: frames rendered to estimate the speed before committing to a long render
PROBE_FRAMES = 4


def container_for(out: Path) -> str:
    """The container format an output path asks for; an unsupported extension is an error up front."""
    fmt = CONTAINERS.get(Path(out).suffix.lower())
    if fmt is None:
        raise GstalkError(
            f"cannot write {out}: gstalk writes {', '.join(CONTAINERS)} videos (H.264 + AAC)",
            f"name the output {Path(out).with_suffix('.mp4').name}",
        )
    return fmt


def render_video(config: RenderConfig) -> dict:
    """Render ``config.audio`` through the run; returns figures (frames, seconds, frames/s, and the
    process's CPU seconds over the same span: rendering and encoding, not loading)."""
    out = Path(config.out)
    if (config.audio is None) == (config.drive_video is None):
        raise GstalkError("give the speech (--audio) or a face to follow (--drive-video), one of them",
                          "pass --audio SPEECH, or --drive-video VIDEO")  # fmt: skip
    with claim_output(out, [config.audio, config.drive_video, config.run, config.dataset], folder=False):
        if config.drive_video is not None:
            from .reenact import render_reenactment

            return render_reenactment(config, out, container_for(out))
        return _render(config, out, container_for(out))


def _render(config: RenderConfig, out: Path, fmt: str) -> dict:
    # decoded once, at the rate muxed into the video; the model's 16 kHz copy is resampled from it
    mux = read_audio(config.audio, rate=MUX_RATE, max_seconds=config.max_audio_seconds)
    speech = resample(mux, MUX_RATE, AUDIO_RATE)
    if is_silent(speech):
        raise GstalkError(f"{config.audio} is silent", "pass the speech you want the person to say")
    driver = Driver(config.run, config.dataset, config.size, config.device, config.backend,
                    speech_model=config.speech_model)  # fmt: skip
    features = driver.speech(speech)
    n = len(features)
    if n < 1:
        raise GstalkError(f"{config.audio} is shorter than one video frame", "pass a longer audio file")
    pose = PoseSource(config.pose, config.still_frame, config.yaw_deg, config.pitch_deg)
    check_viewpoint(driver, config)
    size = driver.size
    needed = (n * size * size * VIDEO_BITS_PER_PIXEL + n / driver.fps * AUDIO_BITS_PER_SECOND) / 8
    check_free_space(out.parent, needed, "the video")
    _confirm_duration(config, driver, features, pose, n)
    bar = tqdm(total=n, desc="render", unit="frame", disable=not config.progress)

    def frames():
        for frame in driver.render(features, pose):
            bar.update()
            yield frame

    start, cpu = time.perf_counter(), time.process_time()
    with atomic_path(out) as tmp:
        written = write_video(tmp, frames(), driver.fps, mux[: round(n / driver.fps * MUX_RATE)], MUX_RATE,
                              container_format=fmt)  # fmt: skip
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    bar.close()
    save_config(config, out.parent, name=out.stem + ".config.json")
    figures = {
        "frames": written,
        "seconds": round(seconds, 2),
        "fps": round(written / seconds, 2),
        "cpu_seconds": round(cpu_seconds, 2),  # every thread's, over the same span (x264's included)
        "audio_seconds": round(len(speech) / AUDIO_RATE, 2),
        "out": str(out),
    }
    print(
        f"gstalk render: {written} frames in {seconds:.1f} s ({figures['fps']} frames/s, "
        f"encoding included) -> {out}",
        flush=True,
    )
    return figures


#: free-viewpoint margin the model is trusted with beyond the angles the clip covers, degrees
VIEW_MARGIN_DEG = 3.0


def check_viewpoint(driver: Driver, config: RenderConfig) -> None:
    """Warn when a free-viewpoint offset goes beyond the head turns the clip shows (plus a small margin),
    and refuse one more than twice that far unless --yes: the face falls apart there."""
    covered = driver.view_coverage()
    for name, asked, seen in (("yaw", config.yaw_deg, covered[0]), ("pitch", config.pitch_deg, covered[1])):
        trusted = seen + VIEW_MARGIN_DEG
        if abs(asked) <= trusted:
            continue
        message = (f"--{name}-deg {asked:g} turns the head beyond what the training clip shows "
                   f"(±{seen:.1f}° of {name}, trusted to ±{trusted:.0f}°)")  # fmt: skip
        if abs(asked) > 2 * trusted and not config.yes:
            raise GstalkError(message + "; the unseen side of the face renders broken",
                              f"use at most ±{trusted:.0f}°, train on a clip with more head turns, or pass "
                              "--yes to render it anyway")  # fmt: skip
        print(f"gstalk render: warning: {message}; expect blotches and seams", file=sys.stderr, flush=True)


def _confirm_duration(
    config: RenderConfig, driver: Driver, features: Speech, pose: PoseSource, n: int
) -> None:
    """Time a few frames; a render estimated to take longer than ``confirm_minutes`` needs ``--yes``."""
    if n <= 10 * PROBE_FRAMES:
        return
    frames = driver.render(features, pose, stop=PROBE_FRAMES + 1)
    next(frames)  # warm-up
    start = time.perf_counter()
    for _ in frames:
        pass
    estimate = n * (time.perf_counter() - start) / PROBE_FRAMES
    if estimate > config.confirm_minutes * 60 and not config.yes:
        raise GstalkError(
            f"rendering {n / driver.fps:.0f} s of audio will take about {estimate / 60:.0f} minutes here",
            "pass --yes to go ahead, or --size with a smaller value, or a shorter audio file",
        )
    if not config.progress:
        print(f"gstalk render: {n} frames, about {estimate:.0f} s", flush=True)
