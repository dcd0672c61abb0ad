"""The prepared dataset on disk, and lazy access to it.

Layout of a dataset folder (``manifest.json`` describes it, with a schema version)::

    manifest.json        what is here: frames, fps, size, intrinsics, splits, feature shapes
    config.json          the PrepareConfig that made it
    summary.json         tracking, pose jitter and timing figures
    frames/000000.jpg    the cropped frames (size × size, RGB)
    regions/000000.png   uint8 Region label maps
    background.png       the static background plate
    audio.wav            16 kHz mono speech
    audio_features.npy   (T, W, C) float16, audio windows aligned to frames
    tracks.npz           valid, landmarks, poses, expression features (per frame)
    contact_sheet.png, timeline.png   visual checks
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import SCHEMA_VERSION
from ..errors import GstalkError
from ..regions import Region

FORMAT = "gstalk-dataset"


def frame_name(index: int, ext: str) -> str:
    return f"{index:06d}.{ext}"


@dataclass
class Frame:
    """Everything training needs about one frame (images as uint8, channels last)."""

    index: int
    image: np.ndarray  # (H, W, 3) uint8
    regions: np.ndarray  # (H, W) uint8 Region ids
    world_to_cam: np.ndarray  # (4, 4) float32
    audio: np.ndarray  # (W, C) float32
    expression: np.ndarray  # (6,) explicit features
    code: np.ndarray  # (K,) implicit expression code


class Dataset:
    """A prepared dataset folder. Frames and masks are read lazily; per-frame arrays are loaded once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        manifest_path = self.root / "manifest.json"
        if not manifest_path.is_file():
            raise GstalkError(
                f"{self.root} is not a gstalk dataset (no manifest.json)",
                "run `gstalk prepare --video VIDEO --out FOLDER` first",
            )
        try:
            self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as err:
            raise GstalkError(f"{manifest_path} is corrupt ({err})", "prepare the dataset again") from err
        if self.manifest.get("format") != FORMAT:
            raise GstalkError(f"{self.root} is not a gstalk dataset", "prepare it with `gstalk prepare`")
        version = self.manifest.get("schema_version")
        if version != SCHEMA_VERSION:
            raise GstalkError(
                f"{self.root} was prepared with dataset schema {version}; "
                f"this gstalk reads schema {SCHEMA_VERSION}",
                "prepare the video again with this version of gstalk",
            )
        with np.load(self.root / "tracks.npz") as tracks:
            self.tracks = {k: tracks[k] for k in tracks.files}
        self.audio_features = np.load(self.root / "audio_features.npy", mmap_mode="r")

    # --- what the manifest says -------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return int(self.manifest["n_frames"])

    @property
    def fps(self) -> float:
        return float(self.manifest["fps"])

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def intrinsics(self) -> np.ndarray:
        return np.asarray(self.manifest["intrinsics"], dtype=np.float32)

    @property
    def train_ids(self) -> np.ndarray:
        return np.asarray(self.manifest["splits"]["train"], dtype=np.int64)

    @property
    def test_ids(self) -> np.ndarray:
        return np.asarray(self.manifest["splits"]["test"], dtype=np.int64)

    @property
    def valid(self) -> np.ndarray:
        return self.tracks["valid"]

    @property
    def world_to_cam(self) -> np.ndarray:
        return self.tracks["world_to_cam"]

    # --- per frame -----------------------------------------------------------------------------
    def image(self, index: int) -> np.ndarray:
        return _read_rgb(self.root / "frames" / frame_name(index, "jpg"))

    def regions(self, index: int) -> np.ndarray:
        path = self.root / "regions" / frame_name(index, "png")
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if labels is None:
            raise GstalkError(f"missing or unreadable region map {path}", "prepare the dataset again")
        return labels

    def background(self) -> np.ndarray:
        return _read_rgb(self.root / "background.png")

    def frame(self, index: int) -> Frame:
        return Frame(
            index=index,
            image=self.image(index),
            regions=self.regions(index),
            world_to_cam=self.tracks["world_to_cam"][index],
            audio=np.asarray(self.audio_features[index], dtype=np.float32),
            expression=self.tracks["expression"][index],
            code=self.tracks["expression_code"][index],
        )

    def torso_layer(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The frame's real hair, neck and torso pixels and their mask: the layer under the head."""
        labels = self.regions(index)
        mask = np.isin(labels, [Region.HAIR, Region.NECK, Region.TORSO])
        return self.image(index), mask

    def __len__(self) -> int:
        return self.n_frames


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise GstalkError(f"missing or unreadable image {path}", "prepare the dataset again")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_dataset(root: str | Path) -> Dataset:
    return Dataset(root)
