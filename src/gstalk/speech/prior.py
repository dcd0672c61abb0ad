"""The speaker-independent motion prior: speech → how a lower face moves, learnt from many people.

A :class:`MotionPrior` reads a frame's Whisper encoder states (W states × C channels) and gives the
identity-free motion of :mod:`gstalk.speech.space` (a person's lower face about its own rest, in units of
its own amplitude) as K standardised coefficients: each state channel standardised, one linear map
(:class:`StateReadout`: a linear probe of the encoder, Whisper's states already being the deep part), and
a per-component gain calibrated on people it never saw. It is fitted in closed form (ridge regression) on
many people's speech and tracked faces. On the 30-person corpus, nonlinear readouts and temporal
convolutions over the same states (``speech.motion.AudioMotion`` and variants) followed held-out people
less well than the linear one (docs/benchmarks.md, "The motion prior"): with a few minutes of many
voices, what generalises is what the encoder already separates.

``gstalk prior train`` makes one from a corpus of talking clips (``train.prior``); gstalk ships one made
from ``../shared/data/corpus`` (``speech/weights/``, with its model card), and every avatar starts from
it (``speech.person``).

**The file** is one safetensors file: the tensors (``space.*``, ``readout.*``, ``gain``) and, in its
header's metadata under ``gstalk``, JSON with the format, the prior's shape and the speech features it reads
(the Whisper model's checksum and the block scheme, which a dataset's features must match). Loading never
unpickles anything, and the shipped file's SHA-256 is pinned here: a missing or altered file is an error
that says how to get it back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..data.manifest import AudioSpec, WhisperSpec
from ..errors import GstalkError
from ..fileio import atomic_path
from .space import PriorSpace

FORMAT = "gstalk-motion-prior"
VERSION = 1
#: the file name of a prior inside a folder made by ``gstalk prior train`` (and of the shipped one)
PRIOR_FILE = "prior.safetensors"
#: the model card beside it
CARD_FILE = "MODEL_CARD.md"
#: the package folder holding the shipped prior
BUILTIN_PACKAGE = "gstalk.speech.weights"
#: SHA-256 of the shipped ``prior.safetensors`` (made by ``gstalk prior train`` from ../shared/data/corpus)
BUILTIN_SHA256 = "06e2d1fb29eb48daffc68dfc80c2f6872e90c4f5bae8cd1a55c858387bb2927b"


@dataclass(frozen=True)
class PriorShape:
    """What rebuilds a prior: the states it reads per frame and the space's components."""

    window: int
    """Encoder states per video frame (W)."""
    channels: int
    """Channels of a state (C)."""
    components: int
    """Components of the prior's space (K)."""


@dataclass(frozen=True)
class PriorInfo:
    """A prior's header: its shape, the speech features it reads, and what it was made from."""

    shape: PriorShape
    features: AudioSpec
    """The speech features the prior reads (Whisper, with its weights' checksum and blocks)."""
    corpus: dict[str, Any] = dataclasses.field(default_factory=dict)
    """People, clips, seconds, languages of the corpus it was trained on."""
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Leave-identity-out figures measured while it was trained."""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The ``gstalk prior train`` config that made it."""

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PriorInfo:
        if data.get("format") != FORMAT:
            raise ValueError("not a gstalk motion prior")
        if data.get("version") != VERSION:
            raise ValueError(f"motion prior version {data.get('version')}; this gstalk reads {VERSION}")
        return cls(
            PriorShape(**data["shape"]),
            AudioSpec.from_json(data["features"]),
            dict(data.get("corpus") or {}),
            dict(data.get("figures") or {}),
            dict(data.get("config") or {}),
        )


class StateReadout(nn.Module):
    """(..., W, C) states → (..., K): each of the W·C inputs standardised by ``mean`` and ``std`` (W, C),
    then ``weight`` (K, W·C) and ``bias`` (K,). All buffers: it is fitted in closed form (ridge
    regression), never by gradients."""

    def __init__(self, window: int, channels: int, components: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(window, channels))
        self.register_buffer("std", torch.ones(window, channels))
        self.register_buffer("weight", torch.zeros(components, window * channels))
        self.register_buffer("bias", torch.zeros(components))

    def standardise(self, states: Tensor) -> Tensor:
        """(..., W·C) standardised inputs of (..., W, C) states."""
        return ((states - self.mean) / self.std).flatten(-2)

    def forward(self, states: Tensor) -> Tensor:
        return self.standardise(states) @ self.weight.T + self.bias


class MotionPrior(nn.Module):
    """Speech features (T, W, C) → identity-free motion coefficients (T, K) of :attr:`space`, frame by
    frame (no temporal context: Whisper's block windows already hold 1 s of history and 0.12–0.2 s of
    lookahead, so a stream gives the codes of the whole file at no extra latency).

    ``gain`` (K,) scales each coefficient's distance from ``origin`` (K,), the coefficients of the rest
    (closed lips), so that the predicted motion's spread matches the real one on people outside the
    training set (a least-squares fit under-predicts the spread of what it is unsure of: the lips would
    barely move); about the rest, so silence stays closed rather than being pushed past it."""

    past = 0
    future = 0

    def __init__(self, info: PriorInfo) -> None:
        super().__init__()
        self.info = info
        s = info.shape
        self.space = PriorSpace(s.components)
        self.readout = StateReadout(s.window, s.channels, s.components)
        self.register_buffer("gain", torch.ones(s.components))
        self.register_buffer("origin", torch.zeros(s.components))

    def forward(self, windows: Tensor) -> Tensor:
        """(B, T, W, C) → (B, T, K) gained coefficients."""
        return self.origin + self.gain * (self.readout(windows) - self.origin)

    @torch.no_grad()
    def predict(self, features: np.ndarray, chunk: int = 4096) -> Tensor:
        """(T, K) gained coefficients of every frame of (T, W, C) features."""
        device = self.gain.device
        out = [self(torch.from_numpy(np.asarray(features[i : i + chunk], np.float32)).to(device))
               for i in range(0, len(features), chunk)]  # fmt: skip
        return torch.cat(out) if out else torch.zeros(0, self.gain.shape[0], device=device)

    @torch.no_grad()
    def lip_gap(self, features: np.ndarray) -> np.ndarray:
        """(T,) float64: the opening of the lips at the middle of the mouth that the prior predicts for
        every frame of (T, W, C) features, in units of a person's amplitude (a linear stand-in for
        ``face.mesh.mouth_gap``: the vertical distance of vertices 14 and 13)."""
        z = self.predict(features)
        rest = self.space.mean[14, 1] - self.space.mean[13, 1]
        return (z @ self.space.gap_direction() + rest).double().cpu().numpy()

    def check_features(self, spec: AudioSpec) -> str | None:
        """Why a dataset with features ``spec`` cannot use this prior (another feature kind, encoder or
        block scheme), or None when it can."""
        mine = self.info.features
        if spec.features != "whisper" or spec.whisper is None:
            return f"the dataset has {spec.features} features; the prior reads Whisper's encoder states"
        shape = self.info.shape
        if (spec.window, spec.dim) != (shape.window, shape.channels):
            return (f"the dataset's frames hold {spec.window} states of {spec.dim} channels; the prior reads "
                    f"{shape.window} of {shape.channels}")  # fmt: skip
        theirs, ours = spec.whisper, mine.whisper or WhisperSpec()
        if theirs.sha256 != ours.sha256:
            return (f"the dataset's features come from the Whisper model {theirs.model} (SHA-256 "
                    f"{theirs.sha256[:12]}…); the prior's from {ours.model} "
                    f"({ours.sha256[:12]}…)")  # fmt: skip
        scheme = lambda w, n: (w.block, w.history, w.lookahead, w.first_state, n)  # noqa: E731
        if scheme(theirs, spec.window) != scheme(ours, mine.window):
            return (f"the dataset's Whisper blocks (block, history, lookahead, first state, states) are "
                    f"{scheme(theirs, spec.window)}; the prior's {scheme(ours, mine.window)}")  # fmt: skip
        return None


def save_prior(path: str | Path, prior: MotionPrior) -> Path:
    """Write ``prior`` to ``path`` (a ``.safetensors`` file) atomically; returns the path."""
    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu().float() for k, v in prior.state_dict().items()}
    meta = {
        "gstalk": json.dumps(prior.info.to_json(), default=str),
        "tensors_sha256": tensors_digest(tensors),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """SHA-256 of the tensors' names, shapes and bytes, in name order: what a prior file's header records,
    so altered weights are found at load."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu().float()
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def builtin_path() -> Path:
    """The shipped prior's file inside the installed package."""
    return Path(str(resources.files(BUILTIN_PACKAGE).joinpath(PRIOR_FILE)))


def resolve_prior_path(source: str | Path) -> Path:
    """The prior file that ``source`` names: ``builtin`` (the shipped one), a ``.safetensors`` file, or a
    folder made by ``gstalk prior train`` (its ``prior.safetensors``)."""
    if str(source) == "builtin":
        return builtin_path()
    path = Path(source)
    return path / PRIOR_FILE if path.is_dir() else path


def load_prior(
    source: str | Path | None = "builtin", device: str | torch.device = "cpu"
) -> MotionPrior | None:
    """The motion prior ``source`` names (see :func:`resolve_prior_path`; ``None`` or ``none``: no prior).

    The shipped file is checked against its pinned SHA-256. Raises :class:`GstalkError` naming the fix for
    a missing, altered, foreign, damaged or newer-format file."""
    if source is None or str(source) == "none":
        return None
    builtin = str(source) == "builtin"
    path = resolve_prior_path(source)
    reinstall = "reinstall gstalk (pip install -e .), or pass --prior FILE or --prior none"
    if not path.is_file():
        if builtin:
            raise GstalkError(f"the motion prior shipped with gstalk is missing ({path})", reinstall)
        raise GstalkError(f"no motion prior at {path}",
                          "pass a file or folder made by `gstalk prior train`, builtin, or none")  # fmt: skip
    if builtin and BUILTIN_SHA256 and file_sha256(path) != BUILTIN_SHA256:
        raise GstalkError(f"the motion prior shipped with gstalk has been altered ({path} fails its "
                          "SHA-256)", reinstall)  # fmt: skip
    fix = reinstall if builtin else "train it again with `gstalk prior train`, or pass another --prior"
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        tensors = load_file(str(path))
        info = PriorInfo.from_json(json.loads(header.get("gstalk") or "{}"))
    except (SafetensorError, OSError, RuntimeError, ValueError, KeyError, TypeError) as err:
        raise GstalkError(f"{path} is not a readable gstalk motion prior ({err})", fix) from err
    if header.get("tensors_sha256") != tensors_digest(tensors):
        raise GstalkError(f"the motion prior at {path} has been altered (its weights do not match the "
                          "checksum in its header)", fix)  # fmt: skip
    prior = MotionPrior(info)
    expected = prior.state_dict()
    bad = sorted(set(expected) ^ set(tensors)) or [
        k for k, v in expected.items() if tensors[k].shape != v.shape or not torch.isfinite(tensors[k]).all()
    ]
    if bad:
        raise GstalkError(f"the motion prior at {path} is damaged (tensors {bad[:3]})", fix)
    prior.load_state_dict(tensors)
    return prior.to(device).eval()


__all__ = [
    "BUILTIN_SHA256",
    "CARD_FILE",
    "PRIOR_FILE",
    "MotionPrior",
    "PriorInfo",
    "PriorShape",
    "builtin_path",
    "describe_prior",
    "load_prior",
    "resolve_prior_path",
    "save_prior",
]


def describe_prior(source: str | Path = "builtin") -> str:
    """A few lines on the prior ``source`` names (see :func:`load_prior`): the file, what it reads, what it
    was trained on and its held-out figures, then its model card when one lies beside it."""
    prior = load_prior(source)
    if prior is None:
        return "no motion prior (--prior none): each avatar learns its motion from its own clip alone"
    path = resolve_prior_path(source)
    info, w = prior.info, prior.info.features.whisper or WhisperSpec()
    lines = [
        f"motion prior {path} ({path.stat().st_size / 1e6:.2f} MB, SHA-256 {file_sha256(path)[:16]}…)",
        f"reads: {info.shape.window} Whisper {w.model} states per frame (blocks {w.block} s, history "
        f"{w.history} s, lookahead {w.lookahead} s, first state {w.first_state}); gives "
        f"{info.shape.components} components; gain {float(prior.gain[0]):.2f}",
        f"trained on: {json.dumps(info.corpus)}",
        f"held out by person: {json.dumps(info.figures)}",
    ]
    card = path.parent / CARD_FILE
    if card.is_file():
        lines += ["", card.read_text()]
    return "\n".join(lines)
