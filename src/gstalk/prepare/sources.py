"""Where ``prepare`` reads from: a video file, or a folder prepared by ER-NeRF / TalkingGaussian tools."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..media import probe_video, read_audio, read_frames
from ..media.video import VideoInfo


@dataclass
class KnownCameras:
    """Cameras supplied with the input (e.g. by another tool's face tracker), in its image pixels."""

    world_to_cam: np.ndarray  # (T, 4, 4) OpenCV convention
    intrinsics: np.ndarray  # (4,) fx, fy, cx, cy
    valid: np.ndarray  # (T,) bool: frames that have a camera


class Source:
    """Frames at a frame rate, the speech, and optionally known cameras."""

    name: str
    info: VideoInfo
    cameras: KnownCameras | None = None

    def frames(self, fps: float) -> Iterator[tuple[int, np.ndarray]]:
        raise NotImplementedError

    def audio(self) -> np.ndarray:
        raise NotImplementedError


class VideoSource(Source):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.info = probe_video(path)

    def frames(self, fps: float) -> Iterator[tuple[int, np.ndarray]]:
        return read_frames(self.path, fps)

    def audio(self) -> np.ndarray:
        return read_audio(self.path)
