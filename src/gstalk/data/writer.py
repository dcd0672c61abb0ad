"""Writing a dataset folder: the one writer that ``prepare``, the ER-NeRF import and the tests all use.

Every file goes through a checked write: an image OpenCV fails to encode, or a full disk, is an error at
the moment it happens, never a zero-byte file found later. The manifest is written last, so a folder
without one is never mistaken for a complete dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import soundfile

from ..config import save_config
from ..errors import GstalkError
from ..fileio import atomic_path
from ..media.audio import AUDIO_RATE
from .layout import (
    AUDIO,
    AUDIO_FEATURES,
    BACKGROUND,
    CONFIG,
    CONTACT_SHEET,
    FRAMES,
    REGIONS,
    TIMELINE,
    TRACKS,
    frame_path,
    region_path,
)
from .manifest import Manifest
from .summary import Summary
from .tracks import Tracks


def write_image(
    path: Path, image: np.ndarray, params: list[int] | None = None, ext: str | None = None
) -> None:
    """Encode ``image`` (RGB, RGBA or a label map) by ``ext`` (default: the path's extension, e.g. ".png")
    and write it; errors name the file."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, buf = cv2.imencode(ext or path.suffix, image, params or [])
    if not ok:
        raise GstalkError(f"could not encode {path.name} ({image.shape}, {image.dtype})", "report this bug")
    with open(path, "wb") as f:
        f.write(buf.tobytes())


class DatasetWriter:
    """Writes the files of a dataset folder at ``root`` (created if needed)."""

    def __init__(self, root: str | Path, jpeg_quality: int = 95) -> None:
        self.root = Path(root)
        (self.root / FRAMES).mkdir(parents=True, exist_ok=True)
        (self.root / REGIONS).mkdir(exist_ok=True)
        self.jpeg = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]

    def frame(self, index: int, rgb: np.ndarray, labels: np.ndarray) -> None:
        """Frame ``index``: the RGB crop (JPEG) and its region label map (PNG)."""
        write_image(frame_path(self.root, index), rgb, self.jpeg)
        write_image(region_path(self.root, index), labels.astype(np.uint8))

    def background(self, rgb: np.ndarray) -> None:
        write_image(self.root / BACKGROUND, rgb)

    def audio(self, audio: np.ndarray) -> None:
        """The clip's speech, 16 kHz mono."""
        with atomic_path(self.root / AUDIO) as tmp:
            soundfile.write(tmp, audio, AUDIO_RATE, subtype="PCM_16", format="WAV")

    def audio_features(self, features: np.ndarray) -> None:
        """(T, W, C) audio windows aligned to frames."""
        with atomic_path(self.root / AUDIO_FEATURES) as tmp, open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(features, dtype=np.float16))

    def tracks(self, tracks: Tracks) -> None:
        tracks.save(self.root / TRACKS)

    def written_tracks(self, n_frames: int) -> Tracks:
        """The tracks written so far, read back and checked against ``n_frames`` (GstalkError if damaged)."""
        return Tracks.load(self.root / TRACKS, n_frames)

    def contact_sheet(self, rgb: np.ndarray) -> None:
        """(H, W, 3) uint8 picture of sample frames (drawn by ``prepare.report``)."""
        with atomic_path(self.root / CONTACT_SHEET) as tmp:
            write_image(tmp, rgb, ext=".png")

    def timeline(self, rgb: np.ndarray) -> None:
        """(H, W, 3) uint8 plot of the per-frame measures over time (drawn by ``prepare.report``)."""
        with atomic_path(self.root / TIMELINE) as tmp:
            write_image(tmp, rgb, ext=".png")

    def finish(self, manifest: Manifest, summary: Summary, config: Any) -> None:
        """The summary, the config that made the dataset (a dataclass), then the manifest: last, because
        a folder with a manifest is a dataset."""
        summary.write(self.root)
        save_config(config, self.root, name=CONFIG)
        self.manifest(manifest)

    def manifest(self, manifest: Manifest) -> None:
        """Last: the folder becomes a dataset."""
        tracks = Tracks.load(self.root / TRACKS, manifest.n_frames)  # what is written must read back
        del tracks
        manifest.write(self.root)
