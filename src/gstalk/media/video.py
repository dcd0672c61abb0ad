"""Video decoding with PyAV, resampled to a fixed frame rate by timestamps (variable frame rate safe)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import GstalkError


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float  # average frame rate of the source
    duration: float  # seconds
    codec: str
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None

    def frames_at(self, fps: float) -> int:
        """How many frames the clip has once resampled to ``fps``."""
        return max(0, int(np.floor(self.duration * fps + 1e-6)))


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise GstalkError(f"no such file: {path}", "check the path")
    if path.is_dir():
        raise GstalkError(f"{path} is a folder, not a video file", "pass a video file (mp4, mov, mkv, webm)")
    try:
        return av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as err:
        raise GstalkError(
            f"{path} is not a readable video ({err.__class__.__name__}: {err})",
            "pass an mp4, mov, mkv or webm file; if it is one, it may be corrupt or truncated: re-export it",
        ) from err


def probe_video(path: str | Path) -> VideoInfo:
    """Read the container's metadata; clear errors for missing, unreadable or video-less files."""
    with _open(path) as container:
        if not container.streams.video:
            raise GstalkError(f"{path} has no video stream", "pass a video of the person talking")
        vs = container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = (vs.frames or 0) / float(rate)
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=str(path),
            width=vs.codec_context.width,
            height=vs.codec_context.height,
            fps=float(rate),
            duration=duration,
            codec=vs.codec_context.name,
            has_audio=audio is not None,
            audio_rate=audio.rate if audio is not None else None,
            audio_channels=audio.channels if audio is not None else None,
        )


def read_frames(path: str | Path, fps: float) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, rgb uint8 (H, W, 3))`` at ``fps``: output frame k shows what is on screen at k / fps.

    Frames are chosen by presentation timestamp, so variable-frame-rate input stays in sync with its audio:
    a source frame repeats or is dropped as needed. Time 0 is the first frame's timestamp.

    A decode that ends early (a file cut short, or damaged data the decoder skips silently) is an error
    naming how much of the container's duration was decoded, checked before the last frames are yielded.
    """
    expected = probe_video(path).duration
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = None
        pending: tuple[float, np.ndarray] | None = None
        k = 0
        decoded = 0
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else decoded / float(stream.average_rate or 25)
                decoded += 1
                if start is None:
                    start = t
                t -= start
                if pending is not None:
                    # the pending frame is on screen from its time until this frame's time
                    while k / fps < t - 1e-6:
                        yield k, pending[1]
                        k += 1
                pending = (t, frame.to_ndarray(format="rgb24"))
        except (av.error.InvalidDataError, av.error.FFmpegError) as err:
            if decoded == 0:
                raise GstalkError(
                    f"{path}: no frame could be decoded ({err})",
                    "the file is corrupt: re-export or re-download it",
                ) from err
            raise GstalkError(
                f"{path} is corrupt or truncated: decoding stopped after {decoded} frames ({err})",
                "re-export the video, or cut it before the damaged part",
            ) from err
        if pending is not None:
            frame_len = 1.0 / float(stream.average_rate or fps)
            got = pending[0] + frame_len
            if expected > 0 and got < expected - max(0.5, 0.02 * expected):
                raise GstalkError(
                    f"{path} is truncated or corrupt: {got:.1f} s of its {expected:.1f} s of video decode",
                    "re-export or re-download the video, or cut it to the part that plays",
                )
            while k / fps < pending[0] + frame_len - 1e-6:
                yield k, pending[1]
                k += 1
    finally:
        container.close()
