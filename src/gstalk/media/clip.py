"""A video file as a player shows it, frames and sound on one timeline: the one reader ``prepare``,
``render --audio VIDEO`` and ``evaluate --cross-video`` go through.

Time 0 is the first shown frame. Frame k (at a fixed ``fps``) is what a player shows at ``k / fps``,
upright and with square pixels (``media.video``); the sound is placed by its own presentation times
(``media.audio``), so a stream that starts late, an edit list or codec priming moves it where it plays.
A frame is *covered* when sound runs under the whole of it; :class:`Coverage` says which frames are, and
only those are paired (frames at either end without sound are dropped, never given silence or another
frame's sound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GstalkError
from .audio import AUDIO_RATE, TimedAudio, decode_audio
from .video import VideoInfo, probe_video, read_frames


@dataclass(frozen=True)
class Coverage:
    """Which frames of a video at ``fps`` have sound under them: ``first <= k < stop`` of ``total``."""

    first: int
    stop: int
    total: int
    fps: float

    @property
    def kept(self) -> int:
        """Frames with sound under them."""
        return max(0, self.stop - self.first)

    @property
    def complete(self) -> bool:
        return self.first == 0 and self.stop == self.total

    def describe(self) -> str:
        """One sentence a user reads: how much was kept, and which seconds."""
        if self.complete:
            return f"the sound covers all {self.total} frames"
        return (
            f"the sound covers {self.kept / self.fps:.2f} s of the {self.total / self.fps:.2f} s of video "
            f"({self.first / self.fps:.2f}–{self.stop / self.fps:.2f} s): frames without sound under them "
            f"are dropped, {self.kept} of {self.total} kept ({self.kept / max(self.total, 1):.0%})"
        )

    def as_dict(self) -> dict:
        return {
            "first_frame": self.first,
            "frames_kept": self.kept,
            "frames_in_video": self.total,
            "seconds_kept": round(self.kept / self.fps, 3),
        }


def coverage(audio: TimedAudio, total: int, fps: float) -> Coverage:
    """The frames of a ``total``-frame video at ``fps`` that ``audio`` (on the same clock) runs under.

    A frame spans ``[k / fps, (k + 1) / fps)``; it is covered when the sound starts no later than its
    start and ends no earlier than its end, give or take half a frame (codec padding and rounding).
    """
    slack = 0.5 / fps
    first = max(0, math.ceil((audio.start - slack) * fps - 1e-9))
    stop = min(total, math.floor((audio.end + slack) * fps + 1e-9))
    return Coverage(first, max(first, stop), total, fps)


@dataclass
class PairedClip:
    """Frames and the sound under them, from one video file: ``frames[i]`` is the video's frame
    ``first + i`` and ``audio[round(i · rate / fps)]`` is the sound at its instant."""

    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB, upright, square pixels."""
    audio: np.ndarray
    """(round(T · rate / fps),) float32 mono; sample 0 at ``frames[0]``'s instant."""
    fps: float
    rate: int
    first: int
    """Index of ``frames[0]`` among the video's frames at ``fps``."""
    coverage: Coverage
    """Which of the video's frames have sound under them (``frames`` holds the first of those, up to
    ``max_seconds``)."""
    info: VideoInfo


def read_paired(
    path: str | Path, fps: float = 25.0, max_seconds: float | None = None, rate: int = AUDIO_RATE
) -> PairedClip:
    """The frames of ``path`` that have sound under them (at most ``max_seconds`` of them, from the first)
    and that sound, on one timeline: e.g. another person's clip for ``evaluate --cross-video``.

    Holds T·H·W·3 bytes of frames. Raises GstalkError for a file without video or sound, or when no frame
    has sound under it.
    """
    info = probe_video(path)
    sound = decode_audio(path, rate, origin=info.start)
    cover = coverage(sound, info.frames_at(fps), fps)
    if cover.kept == 0:
        raise GstalkError(
            f"no frame of {path} has sound under it (video 0–{cover.total / fps:.2f} s, sound "
            f"{sound.start:.2f}–{sound.end:.2f} s)",
            "use a clip whose sound plays with its picture",
        )
    stop = cover.stop if max_seconds is None else min(cover.stop, cover.first + int(max_seconds * fps))
    frames = np.stack([rgb for _, rgb in read_frames(path, fps, cover.first, stop, info)])
    stop = cover.first + len(frames)  # a video that decodes fewer frames than its header says
    audio = sound.between(cover.first / fps, stop / fps)
    return PairedClip(frames, audio, fps, rate, cover.first, cover, info)
