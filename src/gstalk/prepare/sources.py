"""Where ``prepare`` reads from: a video file (as a player shows it, ``media.clip``), or a folder prepared by
ER-NeRF / TalkingGaussian tools."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.ernerf import ErnerfFolder
from ..errors import GstalkError
from ..media import AUDIO_RATE, TimedAudio, decode_audio, probe_video, read_frames
from ..media.video import VideoInfo


@dataclass
class KnownCameras:
    """Cameras supplied with the input (e.g. by another tool's face tracker), in its image pixels."""

    world_to_cam: np.ndarray  # (T, 4, 4) OpenCV convention
    intrinsics: np.ndarray  # (4,) fx, fy, cx, cy
    valid: np.ndarray  # (T,) bool: frames that have a camera


class Source:
    """Frames at a frame rate and the speech on the same clock, and optionally known cameras."""

    name: str
    info: VideoInfo
    cameras: KnownCameras | None = None

    def frames(self, fps: float, first: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(k, (H, W, 3) uint8 RGB)`` for frames ``first <= k < stop`` at ``fps``; frame k is at k / fps."""
        raise NotImplementedError

    def audio(self) -> TimedAudio:
        """The speech, 16 kHz mono, with its start on the frames' clock."""
        raise NotImplementedError


class VideoSource(Source):
    """A video file, upright, at square pixels, its sound placed by its presentation times."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.info = probe_video(path)

    def frames(self, fps: float, first: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        return read_frames(self.path, fps, first, stop, self.info)

    def audio(self) -> TimedAudio:
        return decode_audio(self.path, origin=self.info.start)


class ErnerfSource(Source):
    """Frames, speech and cameras of an ER-NeRF / TalkingGaussian folder, at its own frame rate (its
    ``aud.wav`` starts with its first frame)."""

    def __init__(self, folder: str | Path, fps: float = 25.0) -> None:
        self.folder = ErnerfFolder(folder)
        self.name = str(folder)
        n = len(self.folder.ids)
        self.cameras = KnownCameras(self.folder.world_to_cam, self.folder.intrinsics, np.ones(n, bool))
        has_audio = self.folder.audio_path.is_file()
        self.info = VideoInfo(
            path=self.name,
            width=self.folder.width,
            height=self.folder.height,
            fps=fps,
            duration=n / fps,
            codec="jpeg",
            has_audio=has_audio,
            audio_rate=AUDIO_RATE if has_audio else None,
            audio_channels=1 if has_audio else None,
        )
        self.fps = fps

    def frames(self, fps: float, first: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        if abs(fps - self.fps) > 1e-6:
            raise GstalkError(
                f"ER-NeRF frames are at {self.fps:g} fps; cannot resample them to {fps:g}",
                f"prepare with --fps {self.fps:g}",
            )
        return itertools.islice(self.folder.frames(), first, stop)

    def audio(self) -> TimedAudio:
        return TimedAudio(self.folder.audio(), 0.0)
