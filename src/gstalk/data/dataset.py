"""A prepared dataset on disk, read lazily through its typed manifest and tracks (layout: ``data.layout``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import GstalkError
from .layout import AUDIO, AUDIO_FEATURES, BACKGROUND, frame_path, region_path
from .manifest import AudioSpec, ExpressionSpec, Manifest
from .tracks import TRACKS, Tracks


class Dataset:
    """A prepared dataset folder. Frames and label maps are read on demand; per-frame arrays once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = Manifest.read(self.root)
        self.tracks = Tracks.load(self.root / TRACKS, self.manifest.n_frames)
        self.audio_features = _load_features(self.root / AUDIO_FEATURES, self.manifest)

    # --- what the manifest says -------------------------------------------------------------
    @property
    def is_photo(self) -> bool:
        """Made from one photo (``gstalk prepare --image``): one frame, no speech."""
        return self.manifest.extra.get("kind") == "photo"

    @property
    def n_frames(self) -> int:
        return self.manifest.n_frames

    @property
    def fps(self) -> float:
        return self.manifest.fps

    @property
    def size(self) -> int:
        return self.manifest.size

    @property
    def intrinsics(self) -> np.ndarray:
        return np.asarray(self.manifest.intrinsics, dtype=np.float32)

    @property
    def train_ids(self) -> np.ndarray:
        return np.asarray(self.manifest.train, dtype=np.int64)

    @property
    def test_ids(self) -> np.ndarray:
        return np.asarray(self.manifest.test, dtype=np.int64)

    @property
    def audio_spec(self) -> AudioSpec:
        return self.manifest.audio

    @property
    def expression_spec(self) -> ExpressionSpec:
        return self.manifest.expression

    @property
    def audio_path(self) -> Path:
        return self.root / AUDIO

    # --- per-frame arrays ------------------------------------------------------------------------
    @property
    def valid(self) -> np.ndarray:
        return self.tracks.valid

    @property
    def world_to_cam(self) -> np.ndarray:
        return self.tracks.world_to_cam

    def explicit(self, name: str) -> np.ndarray:
        """(T,) the explicit expression measure ``name`` (e.g. ``"blink"``, ``"mouth_open"``)."""
        return self.tracks.expression[:, self.expression_spec.column(name)]

    # --- per frame -----------------------------------------------------------------------------
    def image(self, index: int) -> np.ndarray:
        """Frame ``index`` as (size, size, 3) uint8 RGB."""
        return _read_rgb(frame_path(self.root, index))

    def regions(self, index: int) -> np.ndarray:
        """Frame ``index``'s (size, size) uint8 Region labels."""
        path = region_path(self.root, index)
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if labels is None:
            raise GstalkError(f"missing or unreadable region map {path}", "prepare the dataset again")
        return labels

    def background(self) -> np.ndarray:
        return _read_rgb(self.root / BACKGROUND)

    def __len__(self) -> int:
        return self.n_frames


def _read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise GstalkError(f"missing or unreadable image {path}", "prepare the dataset again")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _load_features(path: Path, manifest: Manifest) -> np.ndarray:
    """The (T, W, C) audio windows, memory-mapped, checked against the manifest."""
    spec = manifest.audio
    try:
        feats = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise GstalkError(f"{path} is missing", "the dataset is incomplete: prepare it again") from None
    except (OSError, ValueError, EOFError) as err:
        raise GstalkError(f"{path} is corrupt or truncated ({err})", "prepare the dataset again") from err
    expected = (manifest.n_frames, spec.window, spec.dim)
    if tuple(feats.shape) != expected:
        raise GstalkError(
            f"{path} holds features of shape {tuple(feats.shape)}, the manifest says {expected}",
            "prepare the dataset again",
        )
    return feats


def load_dataset(root: str | Path) -> Dataset:
    return Dataset(root)


def prepared_config_hash(root: str | Path) -> str | None:
    """The hash of the PrepareConfig that made the complete dataset at ``root``; None when there is no
    readable dataset of this schema there (so the caller prepares it again)."""
    try:
        return Manifest.read(root).config_hash
    except GstalkError:
        return None
