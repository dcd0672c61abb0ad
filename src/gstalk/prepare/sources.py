"""Where ``prepare`` reads from: a video file, or a folder prepared by ER-NeRF / TalkingGaussian tools."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.ernerf import ErnerfFolder
from ..errors import GstalkError
from ..media import AUDIO_RATE, probe_video, read_audio, read_frames
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


class ErnerfSource(Source):
    """Frames, speech and cameras of an ER-NeRF / TalkingGaussian folder, at its own frame rate."""

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

    def frames(self, fps: float) -> Iterator[tuple[int, np.ndarray]]:
        if abs(fps - self.fps) > 1e-6:
            raise GstalkError(
                f"ER-NeRF frames are at {self.fps:g} fps; cannot resample them to {fps:g}",
                f"prepare with --fps {self.fps:g}",
            )
        return self.folder.frames()

    def audio(self) -> np.ndarray:
        return self.folder.audio()
