"""``summary.json``: what a person checks after ``prepare`` (tracking, pose, timing figures, warnings), as a
typed record; the only code that reads or writes it.

:func:`summarise` derives the figures that come from the dataset's own arrays (tracked fraction, lost
frames, field of view, reprojection error); the pipeline adds what only it knows (crop, focal fit,
background coverage, per-step seconds) and the warnings and notes it showed the user.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import GstalkError
from ..fileio import strict_json, write_json_atomic
from .layout import SUMMARY
from .tracks import Tracks


@dataclass
class Summary:
    """The figures of one prepared dataset (``summary.json``); keys as written since schema 2."""

    frames: int
    """Frames in the dataset."""
    tracked_fraction: float
    """Share of frames with a tracked face."""
    lost_frames: int
    several_faces_fraction: float
    """Share of frames in which more than one face was seen."""
    crop: dict[str, int]
    """The square crop in source pixels: x0, y0, side, size (see ``prepare.crop.Crop``)."""
    intrinsics: list[float]
    """fx, fy, cx, cy in pixels of the dataset's frames."""
    fov_deg: float
    """Horizontal field of view of the crop."""
    focal_fit: dict[str, Any]
    pose_jitter: dict[str, float]
    reprojection_px_median: float | str
    """Median RMS reprojection error of the rigid landmarks, px; a sentence when not computed."""
    background_seen_fraction: float
    region_fractions: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds_per_step: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] | None = None
    """The video as stored and as shown: sizes, rotation, mirroring, sample aspect ratio."""
    coverage: dict[str, Any] | None = None
    """Which of the video's frames had sound under them and were kept: first_frame, frames_kept,
    frames_in_video, seconds_kept."""
    sync: dict[str, Any] | None = None
    """The sync check: verdict, offset_s (positive: the sound came early), shift_s (how much later the
    sound was placed), message, and the measure's figures."""
    face_upscale: float | None = None
    """Output size over the crop's side in the shown video: above 1 the frames were enlarged."""

    def check_lines(self) -> list[str]:
        """What ``gstalk check`` reports about the clip beyond soundness: sync, coverage, upscaling and the
        warnings of ``prepare`` (datasets from older versions have fewer of them)."""
        lines = []
        if self.sync is not None:
            offset = self.sync.get("offset_s")
            figure = f"audio–video offset {offset:+.2f} s, " if offset is not None else ""
            shift = self.sync.get("shift_s") or 0.0
            moved = f", sound moved {shift:+.2f} s" if shift else ""
            lines.append(f"sync: {figure}{self.sync.get('verdict')}{moved}")
        if self.coverage is not None and self.coverage.get("frames_kept") != self.coverage.get(
            "frames_in_video"
        ):
            c = self.coverage
            lines.append(f"sound covers {c['frames_kept']} of the video's {c['frames_in_video']} frames "
                         f"(from frame {c['first_frame']}); only those were kept")  # fmt: skip
        if self.face_upscale is not None:
            lines.append(f"face crop enlarged {self.face_upscale:.1f}×" if self.face_upscale > 1
                         else f"face crop reduced {1 / self.face_upscale:.1f}×")  # fmt: skip
        lines += [f"warning: {w}" for w in self.warnings]
        return lines

    def to_json(self) -> dict[str, Any]:
        return strict_json(asdict(self))

    def write(self, root: str | Path) -> Path:
        path = Path(root) / SUMMARY
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def read(cls, root: str | Path) -> Summary | None:
        """The summary of the dataset at ``root``; None when it has none (datasets written by other tools).

        Raises GstalkError when the file is there but unreadable. Keys this version does not know are
        ignored, and keys it added since are left at their defaults, so older datasets still read."""
        path = Path(root) / SUMMARY
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in known})
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, AttributeError) as err:
            raise GstalkError(f"{path} is corrupt ({err})", "prepare the dataset again") from err


def summarise(
    tracks: Tracks,
    n_faces: np.ndarray,
    size: int,
    intrinsics: np.ndarray,
    **figures: Any,
) -> Summary:
    """The summary of a dataset from its ``tracks``, the per-frame face counts ``n_faces`` (T,) int, the
    frame ``size`` and ``intrinsics`` (fx, fy, cx, cy); ``figures`` are the remaining fields of
    :class:`Summary` (crop, focal_fit, pose_jitter, background_seen_fraction, region_fractions, ...)."""
    valid = tracks.valid
    reprojection = tracks.reprojection_px
    measured = reprojection is not None and bool(np.isfinite(reprojection).any())
    intrinsics = np.asarray(intrinsics, np.float64)
    return Summary(
        frames=len(tracks),
        tracked_fraction=float(valid.mean()),
        lost_frames=int((~valid).sum()),
        several_faces_fraction=float((np.asarray(n_faces) > 1).mean()),
        intrinsics=intrinsics.tolist(),
        fov_deg=float(np.degrees(2 * np.arctan(0.5 * size / intrinsics[0]))),
        reprojection_px_median=(
            float(np.nanmedian(reprojection)) if measured else "not computed: cameras came with the input"
        ),
        **figures,
    )
