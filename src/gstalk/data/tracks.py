"""``tracks.npz``: the per-frame arrays of a dataset (tracking, head pose, expression), as one typed record.

The only code that reads or writes the file. Loading checks that every required array is there, has the
frame count of the manifest and holds finite values where it must, so damage is reported by name instead of
surfacing later as a shape error deep in training.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import GstalkError
from ..fileio import atomic_path
from .layout import TRACKS


@dataclass
class Tracks:
    """Per-frame arrays; T frames, 478 MediaPipe landmarks (see ``face.landmarks``)."""

    valid: np.ndarray
    """(T,) bool: the face was tracked in the frame."""
    landmarks2d: np.ndarray
    """(T, 478, 2) landmarks in pixels of the dataset's frames."""
    world_to_cam: np.ndarray
    """(T, 4, 4) head pose as a camera (OpenCV convention), smoothed; untracked frames interpolated."""
    canonical_shape: np.ndarray
    """(478, 3) the subject's neutral face in the head frame, metres."""
    expression: np.ndarray
    """(T, E) explicit expression measures (names in the manifest's ExpressionSpec)."""
    expression_code: np.ndarray
    """(T, K) implicit expression code (blendshapes or a PCA of the landmarks)."""
    mesh: np.ndarray
    """(T, 478, 3) the tracked face mesh in the head frame (pose removed), metres; the first 468 vertices
    are triangulated by ``triangles``."""
    triangles: np.ndarray
    """(F, 3) int32 faces of the mesh (MediaPipe's topology), wound outward."""
    world_to_cam_raw: np.ndarray | None = None
    """(T, 4, 4) per-frame pose before smoothing."""
    reprojection_px: np.ndarray | None = None
    """(T,) RMS reprojection error of the rigid landmarks under the smoothed pose (NaN if not computed)."""
    pca_mean: np.ndarray | None = None
    pca_basis: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.valid)

    def save(self, path: str | Path) -> None:
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | Path, n_frames: int) -> Tracks:
        path = Path(path)
        if not path.is_file():
            raise GstalkError(f"{path} is missing", "the dataset is incomplete: prepare it again")
        try:
            with np.load(path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as err:
            raise GstalkError(f"{path} is corrupt ({type(err).__name__}: {err})",
                              "prepare the dataset again") from err  # fmt: skip
        if not isinstance(arrays, dict):
            raise GstalkError(f"{path} is not a tracks file", "prepare the dataset again")
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is not None}
        missing = sorted(required - arrays.keys())
        if missing:
            raise GstalkError(
                f"{path} lacks {', '.join(missing)}", "prepare the dataset again with this version of gstalk"
            )
        tracks = cls(**{k: v for k, v in arrays.items() if k in known})
        tracks.check(n_frames, str(path))
        return tracks

    def check(self, n_frames: int, where: str = TRACKS) -> None:
        """Lengths agree with the manifest and the arrays that must be finite are."""
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name in ("canonical_shape", "triangles", "pca_mean", "pca_basis"):
                continue
            if len(value) != n_frames:
                problems.append(f"{f.name} has {len(value)} frames, the manifest {n_frames}")
        for name in (
            "world_to_cam",
            "canonical_shape",
            "expression",
            "expression_code",
            "landmarks2d",
            "mesh",
        ):
            if not np.isfinite(getattr(self, name)).all():
                problems.append(f"{name} holds NaN or Inf")
        n_vertices = len(self.mesh[0]) if len(self.mesh) else 0
        if self.triangles.ndim != 2 or self.triangles.shape[1] != 3:
            problems.append(f"triangles has shape {self.triangles.shape}, not (F, 3)")
        elif self.triangles.size and (self.triangles.min() < 0 or self.triangles.max() >= n_vertices):
            problems.append(f"triangles index vertices outside the mesh's {n_vertices}")
        if problems:
            raise GstalkError(f"{where} is damaged: {'; '.join(problems)}", "prepare the dataset again")
