"""``manifest.json``: what a dataset folder holds, as typed dataclasses; the only code that reads or
writes it.

- :class:`Manifest`: frames, frame rate, size, intrinsics, splits, and the specs below.
- :class:`AudioSpec`: which audio features the dataset carries, and how to compute the same features for
  new speech (render, stream, evaluate all go through it).
- :class:`ExpressionSpec`: the names of the explicit expression columns and the implicit code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import SCHEMA_VERSION, __version__
from ..errors import GstalkError
from ..fileio import write_json_atomic
from ..media.audio import AUDIO_RATE
from .layout import MANIFEST

FORMAT = "gstalk-dataset"

#: Audio feature kinds that can be computed for new speech (a dataset may carry others, e.g. in tests).
COMPUTABLE_FEATURES = ("logmel", "hubert", "wav2vec2")


@dataclass(frozen=True)
class AudioSpec:
    """The audio features of a dataset: kind, rate, window, channels, and how they are normalised."""

    features: str
    """``logmel``, ``hubert`` or ``wav2vec2``."""
    feature_rate_hz: float
    """Feature frames per second."""
    window: int
    """Feature frames in the window centred on each video frame."""
    dim: int
    """Channels of a feature frame (after deltas)."""
    rate: int = AUDIO_RATE
    """Sample rate of the dataset's ``audio.wav``."""
    normalisation: str = "none"
    """``none``: loudness normalisation only (the loud 50 ms windows brought to one level);
    ``utterance``: also each channel's mean and variance over the whole input (see docs/benchmarks.md:
    it generalises worse to other speakers than augmentation alone)."""
    deltas: bool = False
    """Append each channel's time derivative."""

    @property
    def window_seconds(self) -> float:
        return self.window / self.feature_rate_hz

    def check_computable(self, speech_model: Path | None = None) -> None:
        """Raise a clear error when features of this kind cannot be computed for new audio."""
        if self.features not in COMPUTABLE_FEATURES:
            raise GstalkError(
                f"this dataset carries {self.features!r} audio features, which new audio cannot be "
                "turned into",
                "prepare the dataset with logmel, hubert or wav2vec2 features",
            )
        if self.features != "logmel" and speech_model is None:
            raise GstalkError(
                f"this dataset's audio features come from a {self.features} model",
                "pass --speech-model with the same model folder that prepared it",
            )

    def frames(
        self,
        audio: np.ndarray,
        speech_model: Path | None = None,
        device: str = "cpu",
        warp: float = 1.0,
        normalise_loudness: bool = True,
    ) -> np.ndarray:
        """(M, C) raw feature frames of 16 kHz mono ``audio`` at ``feature_rate_hz`` (before normalisation
        and deltas). ``normalise_loudness=False`` when the caller has already scaled the audio."""
        from ..media import features

        self.check_computable(speech_model)
        if normalise_loudness:
            audio = features.normalise_loudness(audio)
        frames, rate = features.feature_frames(audio, self.features, speech_model, device, warp)
        channels = self.dim // 2 if self.deltas else self.dim
        if frames.shape[1] != channels or abs(rate - self.feature_rate_hz) > 1e-6:
            raise GstalkError(
                f"the speech model gives {frames.shape[1]} channels at {rate:g} Hz; the dataset was prepared "
                f"with {channels} at {self.feature_rate_hz:g} Hz",
                "pass the same --speech-model that prepared the dataset",
            )
        return frames

    def finish(self, frames: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Normalise raw ``frames`` (with ``stats`` = (mean, std) per channel when given, else the frames'
        own) and append deltas, as the spec says."""
        from ..media import features

        if self.normalisation == "utterance":
            mean, std = stats if stats is not None else (frames.mean(0), frames.std(0))
            frames = ((frames - mean) / np.maximum(std, 1e-3)).astype(np.float32)
        return features.with_deltas(frames) if self.deltas else frames

    def windows(self, frames: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
        """(n_frames, window, dim) float16: the window of finished ``frames`` centred on each video frame."""
        from ..media.features import frame_windows

        return frame_windows(frames, self.feature_rate_hz, n_frames, fps, self.window).astype(np.float16)

    def compute(
        self,
        audio: np.ndarray,
        n_frames: int,
        fps: float,
        speech_model: Path | None = None,
        device: str = "cpu",
        warp: float = 1.0,
    ) -> np.ndarray:
        """(n_frames, window, dim) float16 features of 16 kHz mono ``audio``, exactly as prepared ones."""
        frames = self.frames(audio, speech_model, device, warp)
        return self.windows(self.finish(frames), n_frames, fps)

    def silence(self) -> np.ndarray | None:
        """(window, dim) features of silence, or None when they need a speech model to compute."""
        if self.features != "logmel":
            return None
        if self.normalisation == "utterance":  # a constant input normalises to zero
            return np.zeros((self.window, self.dim), np.float32)
        from ..media.features import log_mel

        frames = log_mel(np.zeros(self.rate, np.float32))
        return np.repeat(self.finish(frames)[:1], self.window, axis=0)


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
        if not path.is_file():
            raise GstalkError(
                f"{root} is not a gstalk dataset (no {MANIFEST})",
                "run `gstalk prepare --video VIDEO --out FOLDER` first",
            )
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise GstalkError(f"{path} is corrupt ({err})", "prepare the dataset again") from err
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
            audio=AudioSpec(**data["audio"]),
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
