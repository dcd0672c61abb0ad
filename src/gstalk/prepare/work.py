"""The work folder of one ``prepare`` run (``.NAME.partial`` beside the output): what each step leaves for
the next, as one typed record per step, as ``data.tracks`` is for the dataset.

step         record        files in the work folder
track        Tracked       track.npz (landmarks, faces, speech), track.json
             Timing        timing.json (which video frames became the dataset's, coverage, sync check)
pose         Posed         pose.npz (poses, intrinsics, canonical face), pose.json (crop, jitter, focal fit)
frames       Framed        frames.npz (the contact sheet's sample frames), frames.json (coverage figures)
audio        Featured      audio.json (the AudioSpec of the features written)
expression   Expressed     expression.json (splits, expression code)

A record's array fields are stored in ``STEP.npz`` and the others in ``STEP.json``; ``steps.json`` records
which steps finished (and in how many seconds) for which config. The dataset itself is built in
``dataset/`` inside the work folder and written only through ``data.DatasetWriter``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from ..data.manifest import AudioSpec
from ..errors import GstalkError
from ..fileio import atomic_path, write_json_atomic
from .crop import Crop

STATE = "steps.json"
DATASET = "dataset"

R = TypeVar("R", bound="Record")


class Record:
    """A step's output. Subclasses are dataclasses naming their ``step``; fields holding an ndarray go to
    ``STEP.npz``, the rest (JSON values, or the dataclasses named in ``nested``) to ``STEP.json``."""

    step: ClassVar[str]
    nested: ClassVar[dict[str, type]] = {}

    def save(self, folder: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        info: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                arrays[f.name] = value
            else:
                info[f.name] = asdict(value) if is_dataclass(value) else value
        if arrays:
            with atomic_path(folder / f"{self.step}.npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        write_json_atomic(folder / f"{self.step}.json", info)

    @classmethod
    def load(cls: type[R], folder: Path) -> R:
        """The record saved in ``folder``; GstalkError when it is missing or damaged."""
        try:
            info = json.loads((folder / f"{cls.step}.json").read_text())
            for name, kind in cls.nested.items():
                made = getattr(kind, "from_json", None)  # a class that reads its own nested JSON
                info[name] = made(info[name]) if made is not None else kind(**info[name])
            npz = folder / f"{cls.step}.npz"
            if npz.is_file():
                with np.load(npz) as data:
                    info.update({k: data[k] for k in data.files})
            return cls(**info)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise GstalkError(
                f"prepare's work folder {folder} holds a damaged record of the {cls.step} step ({err})",
                "run the same command again: it starts over",
            ) from err


@dataclass
class Tracked(Record):
    """The ``track`` step: landmarks of the dataset's frames (the video's frames with sound under them),
    and the speech under them."""

    step: ClassVar[str] = "track"
    landmarks: np.ndarray
    """(T, 478, 3) float32 MediaPipe landmarks in source pixels (z pixel-scaled)."""
    valid: np.ndarray
    """(T,) bool: a face was tracked."""
    n_faces: np.ndarray
    """(T,) int16: faces seen in the frame."""
    audio: np.ndarray
    """(N,) float32 16 kHz mono speech; sample 0 is at the time of the dataset's frame 0."""
    blendshape_names: list[str]
    blendshapes: np.ndarray | None = None
    """(T, 52) float32 MediaPipe blendshapes, when a landmarker bundle was given."""


@dataclass
class Timing(Record):
    """The ``track`` step's placing of the dataset on the video's timeline."""

    step: ClassVar[str] = "timing"
    first_frame: int
    """The video frame (at the dataset's fps, from the first shown frame) that is the dataset's frame 0."""
    n_frames: int
    """Frames in the dataset: the video's frames with sound under them."""
    coverage: dict[str, Any]
    """``media.clip.Coverage.as_dict()`` of the sound as placed."""
    sync: dict[str, Any]
    """``prepare.sync.SyncCheck.as_dict()``."""
    source: dict[str, Any]
    """The video as stored and as shown (sizes, rotation, sample aspect ratio)."""
    notes: list[str]
    warnings: list[str]


@dataclass
class Posed(Record):
    """The ``pose`` step: the crop, and head poses and landmarks in the crop's pixels."""

    step: ClassVar[str] = "pose"
    nested: ClassVar[dict[str, type]] = {"crop": Crop}
    landmarks: np.ndarray
    """(T, 478, 3) float32 landmarks in pixels of the dataset's frames."""
    world_to_cam: np.ndarray
    """(T, 4, 4) smoothed head poses as cameras (OpenCV convention)."""
    world_to_cam_raw: np.ndarray
    intrinsics: np.ndarray
    """(4,) fx, fy, cx, cy in pixels of the dataset's frames."""
    canonical: np.ndarray
    """(478, 3) the subject's neutral face in the head frame, metres."""
    reprojection_px: np.ndarray
    crop: Crop
    jitter: dict[str, float]
    focal_fit: dict[str, Any]


@dataclass
class Framed(Record):
    """The ``frames`` step: frames, regions and background are in the dataset; these are its figures and
    the contact sheet's sample frames."""

    step: ClassVar[str] = "frames"
    background_seen_fraction: float
    region_fractions: dict[str, float]
    sheet_ids: np.ndarray
    """(S,) int: which frames the contact sheet shows."""
    sheet_frames: np.ndarray
    """(S, size, size, 3) uint8 those frames."""
    sheet_labels: np.ndarray
    """(S, size, size) uint8 their Region labels."""


@dataclass
class Featured(Record):
    """The ``audio`` step: the speech and its features are in the dataset; this is how they were made."""

    step: ClassVar[str] = "audio"
    nested: ClassVar[dict[str, type]] = {"spec": AudioSpec}
    spec: AudioSpec


@dataclass
class Expressed(Record):
    """The ``expression`` step: the tracks are in the dataset; these are the splits and the code's kind."""

    step: ClassVar[str] = "expression"
    train: list[int]
    test: list[int]
    code_kind: str
    code_dim: int
    code_names: list[str] | None = None


class WorkFolder:
    """The work folder of a dataset ``out``: the step records plus which steps finished, for the config
    whose hash is ``digest`` (a folder left by another config is cleared)."""

    def __init__(self, out: Path, digest: str) -> None:
        self.dir = out.parent / f".{out.name}.partial"
        self.state_path = self.dir / STATE
        state = _read_state(self.state_path)
        if state is None and self.dir.exists() and (not self.dir.is_dir() or any(self.dir.iterdir())):
            raise GstalkError(
                f"{self.dir} is in the way: prepare keeps its work for {out.name} under that name, and it "
                "is not a gstalk work folder (gstalk will not delete it)",
                "move or rename it, or choose another --out",
            )
        if state is None or state.get("config") != digest:  # another config's work: cleared
            shutil.rmtree(self.dir, ignore_errors=True)
            state = {"config": digest, "done": {}}
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state = state
        self.dataset = self.dir / DATASET
        self.dataset.mkdir(exist_ok=True)

    def done(self, step: str) -> bool:
        return step in self.state["done"]

    def finish(self, step: str, seconds: float) -> None:
        self.state["done"][step] = round(seconds, 2)
        write_json_atomic(self.state_path, self.state)

    def seconds(self) -> dict[str, float]:
        """Seconds each finished step took."""
        return dict(self.state["done"])

    def save(self, record: Record) -> None:
        record.save(self.dir)

    def load(self, kind: type[R]) -> R:
        return kind.load(self.dir)


def _read_state(path: Path) -> dict | None:
    """A work folder's state (which config, which steps are done), or None when there is no such file or
    it is not one gstalk wrote."""
    try:
        state = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(state, dict) or not isinstance(state.get("done"), dict) or "config" not in state:
        return None
    return state
