"""Video decoding with PyAV as a player shows it: upright (display matrix), square pixels (sample aspect
ratio), resampled to a fixed frame rate by presentation timestamps (variable frame rate safe).

Time 0 of a video is its first shown frame: the first frame the decoder outputs, whose presentation time
already reflects the container's edit list (FFmpeg's demuxer applies it). ``media.audio`` places the
audio on the same clock, so frame k at ``k / fps`` and the audio at that time are the same instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import GstalkError
from .display import Display, display_of


@dataclass(frozen=True)
class VideoInfo:
    """A video's metadata; sizes are those a player shows (upright, square pixels)."""

    path: str
    width: int
    height: int
    fps: float  # average frame rate of the source
    duration: float  # seconds of video
    codec: str
    has_audio: bool
    audio_rate: int | None
    audio_channels: int | None
    stored_width: int | None = None
    """Width of the frames as stored (before the display matrix and the sample aspect ratio)."""
    stored_height: int | None = None
    display: Display = field(default_factory=Display)
    """How a player turns and shapes the stored frames."""
    start: float = 0.0
    """Presentation time of the first shown frame on the container's clock, seconds."""

    def frames_at(self, fps: float) -> int:
        """How many frames the clip has once resampled to ``fps``."""
        return max(0, int(np.floor(self.duration * fps + 1e-6)))


def open_media(path: str | Path) -> av.container.InputContainer:
    """Open a video or audio file with PyAV; GstalkErrors for a missing path, a folder, or unreadable data."""
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


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The container's first video stream that is a video (not a cover picture of an audio file)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def first_frame(container: av.container.InputContainer, path: str | Path) -> av.VideoFrame:
    """The first shown frame of the container's video stream (decoding stops there)."""
    stream = video_stream(container)
    try:
        for frame in container.decode(stream):
            return frame
    except (av.error.InvalidDataError, av.error.FFmpegError) as err:
        raise GstalkError(
            f"{path}: no frame could be decoded ({err})", "the file is corrupt: re-export or re-download it"
        ) from err
    raise GstalkError(f"{path}: its video stream holds no frame", "re-export the video")


def probe_video(path: str | Path) -> VideoInfo:
    """Read the container's metadata and its first frame (for the display matrix and the start time);
    clear errors for missing, unreadable, video-less or undecodable files."""
    with open_media(path) as container:
        vs = video_stream(container)
        if vs is None:
            raise GstalkError(f"{path} has no video stream", "pass a video of the person talking")
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        if vs.duration is not None and vs.time_base is not None:
            duration = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = (vs.frames or 0) / float(rate)
        audio = container.streams.audio[0] if container.streams.audio else None
        stored = vs.codec_context.width, vs.codec_context.height
        codec, audio_rate = vs.codec_context.name, audio.rate if audio is not None else None
        audio_channels = audio.channels if audio is not None else None
        frame = first_frame(container, path)
        display = display_of(frame, vs)
        start = frame.time if frame.time is not None else 0.0
    width, height = display.shown_size(*stored)
    return VideoInfo(
        path=str(path),
        width=width,
        height=height,
        fps=float(rate),
        duration=duration,
        codec=codec,
        has_audio=audio is not None,
        audio_rate=audio_rate,
        audio_channels=audio_channels,
        stored_width=stored[0],
        stored_height=stored[1],
        display=display,
        start=float(start),
    )


def read_frames(
    path: str | Path, fps: float, first: int = 0, stop: int | None = None, info: VideoInfo | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(k, rgb uint8 (H, W, 3))`` for ``first <= k < stop``: frame k is what a player shows at
    ``k / fps`` seconds after the first shown frame, upright and with square pixels (``VideoInfo.width`` ×
    ``VideoInfo.height``).

    Frames are chosen by presentation timestamp, so variable-frame-rate input stays in sync with its audio:
    a source frame repeats or is dropped as needed (only the frames yielded are converted to RGB, and
    decoding stops at ``stop``).

    A decode that ends early (a file cut short, or damaged data the decoder skips silently) is an error
    naming how much of the container's duration was decoded, checked before the last frames are yielded.
    ``info``: the file's ``probe_video``, when the caller has it (saves decoding the first frame twice).
    """
    info = info or probe_video(path)
    with open_media(path) as container:
        stream = video_stream(container)
        stream.thread_type = "AUTO"
        frame_len = 1.0 / float(stream.average_rate or fps)
        shown = _Shown(info.display)
        k = first
        last: tuple[float, av.VideoFrame] | None = None
        for t, frame in _timed_frames(container, stream, path, info.start):
            if last is not None:
                # the last frame is on screen from its time until this frame's time
                while k / fps < t - 1e-6 and (stop is None or k < stop):
                    yield k, shown(last[1])
                    k += 1
            if stop is not None and k >= stop:
                return
            last = (t, frame)
        if last is None:
            return
        got = last[0] + frame_len
        if info.duration > 0 and got < info.duration - max(0.5, 0.02 * info.duration):
            raise GstalkError(
                f"{path} is truncated or corrupt: {got:.1f} s of its {info.duration:.1f} s of video decode",
                "re-export or re-download the video, or cut it to the part that plays",
            )
        while k / fps < got - 1e-6 and (stop is None or k < stop):
            yield k, shown(last[1])
            k += 1


class _Shown:
    """Converts decoded frames for display, once each (a frame shown at several output times)."""

    def __init__(self, display: Display) -> None:
        self.display = display
        self.frame: av.VideoFrame | None = None
        self.rgb: np.ndarray | None = None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if frame is not self.frame:
            self.frame, self.rgb = frame, self.display.to_rgb(frame)
        return self.rgb


def _timed_frames(container, stream, path, origin: float) -> Iterator[tuple[float, av.VideoFrame]]:
    """(seconds after ``origin``, frame) for every decoded frame; decode errors become GstalkErrors."""
    decoded = 0
    try:
        for frame in container.decode(stream):
            t = frame.time if frame.time is not None else origin + decoded / float(stream.average_rate or 25)
            decoded += 1
            yield t - origin, frame
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
