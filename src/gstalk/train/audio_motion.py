"""The audio → motion stage: fit :class:`AudioMotion` to the tracked lower face, before any rendering.

Training examples are the training frames' audio windows, from the clip's own speech and from augmented
copies of it (other speeds, vocal tract lengths, gains, rooms and noises; ``media.augment``), so the model
learns what in speech moves the mouth rather than this recording's voice and room. A copy played at speed s
has its targets resampled in time by the same factor. The loss is the ω-weighted squared vertex error of
the lower face (``LowerFaceBasis.weighted_error``) plus the same error on the frame-to-frame velocity,
which keeps the motion smooth without lagging it. The held-out frames (clean audio) measure it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ..config import AudioMotionConfig
from ..data.dataset import Dataset
from ..errors import GstalkError
from ..face.mesh import N_MESH, mouth_gap
from ..media.augment import apply, random_augmentation
from ..speech import FeatureKind, feature_kind
from ..speech.motion import LIPS, AudioMotion, LowerFaceBasis


@dataclass
class MotionData:
    """Sequences of audio windows and their target coefficients: a clip and its augmented copies, or the
    clips of a corpus and theirs."""

    features: list[np.ndarray]  # per sequence (T_i, W, C) float32
    targets: list[np.ndarray]  # per sequence (T_i, K)
    usable: list[np.ndarray]  # per sequence (T_i,) bool: the frame has a target to learn
    weights: list[float] | None = None
    """Per sequence, how often its runs are drawn relative to the others' (None: every sequence alike)."""

    def extend(self, other: MotionData) -> None:
        """Append ``other``'s sequences (and weights) to these."""
        weights = self.weights if self.weights is not None else [1.0] * len(self.features)
        weights += other.weights if other.weights is not None else [1.0] * len(other.features)
        self.features += other.features
        self.targets += other.targets
        self.usable += other.usable
        self.weights = weights


def target_coefficients(ds: Dataset, basis: LowerFaceBasis) -> np.ndarray:
    """(T, K) standardised coefficients of every frame's tracked lower face."""
    displacement = ds.tracks.mesh[:, :N_MESH] - ds.tracks.canonical_shape[None, :N_MESH]
    with torch.no_grad():
        return basis.project(torch.from_numpy(displacement).float()).numpy()


def rest_code(ds: Dataset, coeffs: np.ndarray) -> np.ndarray:
    """(K,) the mouth at rest: the mean code of the training frames whose inner-lip gap is in the clip's
    lowest 5 % (lips closed, or as closed as this speaker's get)."""
    ids = ds.train_ids[ds.valid[ds.train_ids]]
    gap = mouth_gap(ds.tracks.mesh[ids, :N_MESH])
    closed = ids[gap <= np.percentile(gap, 5)]
    return coeffs[closed].mean(0).astype(np.float32)


def add_pauses(audio: np.ndarray, targets: np.ndarray, rest: np.ndarray, fps: float, rate: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Pause augmentation: 1–3 stretches of 0.3–3 s of the speech (at most a third of the clip each)
    become digital silence or a quiet noise floor (−70 to −50 dBFS), and the target there the mouth at
    rest, reached within 60 ms. Stretches longer than an encoder window (1.2 s) teach what a window of
    nothing but silence means. Without it a
    clip with few pauses never shows the model that silence inside speech closes the mouth (in training
    and in every real recording the lips close within about a tenth of a second)."""
    audio, targets = audio.copy(), targets.copy()
    n = len(targets)
    for _ in range(int(rng.integers(1, 4))):
        length = int(rng.uniform(0.3, min(3.0, max(0.4, n / fps / 3))) * fps)
        if n <= length + 2:
            break
        start = int(rng.integers(0, n - length))
        a, b = round(start / fps * rate), round((start + length) / fps * rate)
        floor = 0.0 if rng.random() < 0.5 else 10 ** (rng.uniform(-70, -50) / 20)
        audio[a:b] = floor * rng.standard_normal(b - a).astype(np.float32)
        ramp = np.clip((np.arange(length) + 1) / (0.06 * fps), 0, 1)[:, None]
        targets[start : start + length] = (1 - ramp) * targets[start : start + length] + ramp * rest
    return audio, targets


def augment_sequence(
    audio: np.ndarray,
    targets: np.ndarray,
    usable: np.ndarray,
    rest: np.ndarray,
    fps: float,
    kind: FeatureKind,
    copies: int,
    rng: np.random.Generator,
    progress: bool = False,
) -> MotionData:
    """``copies`` augmented versions of one talking sequence: its 16 kHz ``audio`` (sample 0 at frame 0),
    its per-frame ``targets`` (T, K) and which frames to learn from (``usable``, (T,) bool), each copy a
    random voice, room and microphone (``media.augment``; a copy played at speed s has its targets
    resampled in time by s) and, in every other copy, pauses whose target is ``rest`` (K,)
    (:func:`add_pauses`). Features through ``kind``, as at render time."""
    n_frames = len(targets)
    out = MotionData([], [], [])
    for c in tqdm(range(copies), desc="augment", unit="copy", disable=not progress, leave=False):
        aug = random_augmentation(rng)
        noisy = apply(audio, aug, rng)
        n = int(len(noisy) / kind.spec.rate * fps)
        t = np.arange(n) * aug.speed  # the original frame each copy's frame shows
        lo = np.clip(np.floor(t).astype(int), 0, max(n_frames - 2, 0))
        hi = np.minimum(lo + 1, n_frames - 1)
        frac = np.clip(t - lo, 0, 1)[:, None]
        target = ((1 - frac) * targets[lo] + frac * targets[hi]).astype(np.float32)
        if c % 2 == 0:
            noisy, target = add_pauses(noisy, target, rest, fps, kind.spec.rate, rng)
        out.features.append(kind.compute(noisy, n, fps, warp=aug.warp).astype(np.float32))
        out.targets.append(target)
        out.usable.append((t <= n_frames - 1) & usable[lo] & usable[hi])
    return out


def build_motion_data(
    ds: Dataset, coeffs: np.ndarray, copies: int, seed: int, progress: bool = False
) -> MotionData:
    """The clean features plus ``copies`` augmented versions (voice, room, microphone, and pauses in half
    of them), with time-aligned targets: the training frames of ``ds`` and their coefficients (T, K)."""
    from ..media import read_audio

    train = np.zeros(ds.n_frames, bool)
    train[ds.train_ids] = True
    train &= ds.valid
    data = MotionData([np.asarray(ds.audio_features, dtype=np.float32)], [coeffs], [train])
    if copies:
        kind = feature_kind(ds.audio_spec)
        rng = np.random.default_rng(seed)
        data.extend(augment_sequence(read_audio(ds.audio_path), coeffs, train, rest_code(ds, coeffs), ds.fps,
                                     kind, copies, rng, progress))  # fmt: skip
    return data


def _starts(usable: np.ndarray, length: int) -> np.ndarray:
    """First frames of every run of ``length`` usable frames."""
    if len(usable) < length:
        return np.zeros(0, np.int64)
    run = np.convolve(usable.astype(np.int64), np.ones(length, np.int64), mode="valid")
    return np.flatnonzero(run == length)


def _batch(data: MotionData, starts: list[np.ndarray], past: int, future: int, size: int, length: int,
           rng: np.random.Generator):  # fmt: skip
    """``size`` runs of ``length`` frames: windows (size, past + length + future, W, C), targets
    (size, length, K)."""
    copies = [c for c in range(len(starts)) if len(starts[c])]
    p = None
    if data.weights is not None:
        p = np.array([data.weights[c] for c in copies], np.float64)
        p = p / p.sum()
    windows, targets = [], []
    for c in rng.choice(copies, size, p=p):
        k = int(rng.choice(starts[c]))
        feats = data.features[c]
        idx = np.clip(np.arange(k - past, k + length + future), 0, len(feats) - 1)
        windows.append(feats[idx])
        targets.append(data.targets[c][k : k + length])
    return torch.from_numpy(np.stack(windows)), torch.from_numpy(np.stack(targets))


def predict_coefficients(model: AudioMotion, features: np.ndarray) -> np.ndarray:
    """(T, K) coefficients for every frame of (T, W, C) features."""
    model.eval()
    return model.predict(features).cpu().numpy()


def lip_error_mm(basis: LowerFaceBasis, predicted: np.ndarray, displacement: np.ndarray) -> float:
    """Mean Euclidean distance (mm) of the lip vertices of predicted coefficients (T, K) from the tracked
    ones, given as (T, N_MESH, 3) displacements from the canonical face."""
    with torch.no_grad():
        d = basis.reconstruct(torch.from_numpy(predicted)) - torch.from_numpy(displacement).float()
    return float(1000 * d[:, LIPS].norm(dim=-1).mean())


def validate(ds: Dataset, basis: LowerFaceBasis, model: AudioMotion, coeffs: np.ndarray) -> dict[str, float]:
    """Held-out frames: lip vertex error (mm) against the tracked lips (and that of the mean mouth, for
    reference), and how the predicted mouth gap follows the tracked one."""
    ids = ds.test_ids[ds.valid[ds.test_ids]]
    if len(ids) < 2:
        return {
            "lip_error_mm": float("nan"),
            "gap_correlation": float("nan"),
            "gap_range_ratio": float("nan"),
        }
    pred = predict_coefficients(model, np.asarray(ds.audio_features, np.float32))[ids]
    canonical = torch.from_numpy(ds.tracks.canonical_shape[:N_MESH]).float()
    with torch.no_grad():
        gap_pred = mouth_gap((canonical + basis.reconstruct(torch.from_numpy(pred))).numpy())
        gap_true = mouth_gap((canonical + basis.reconstruct(torch.from_numpy(coeffs[ids]))).numpy())
    spread = lambda g: np.percentile(g, 95) - np.percentile(g, 5)  # noqa: E731
    tracked = ds.tracks.mesh[ids, :N_MESH] - ds.tracks.canonical_shape[None, :N_MESH]
    return {
        "lip_error_mm": lip_error_mm(basis, pred, tracked),
        "mean_mouth_lip_error_mm": lip_error_mm(basis, np.zeros_like(pred), tracked),
        "gap_correlation": float(np.corrcoef(gap_pred, gap_true)[0, 1]) if np.std(gap_pred) > 0 else 0.0,
        "gap_range_ratio": float(spread(gap_pred) / max(spread(gap_true), 1e-9)),
    }


def motion_loss(space, pred: torch.Tensor, target: torch.Tensor, velocity_weight: float) -> torch.Tensor:
    """The ω-weighted squared vertex error of standardised coefficients (B, T, K) in ``space`` (a
    ``LowerFaceBasis`` or the prior's ``PriorSpace``: anything with ``component_variances`` and
    ``vertex_weights``), plus ``velocity_weight`` times the same error of the frame-to-frame velocity,
    in the space's units squared × 1e6 (mm² for a basis in metres)."""
    var = space.component_variances() / space.vertex_weights.sum()
    position = ((pred - target).pow(2) * var).sum(-1).mean()
    velocity = (((pred[:, 1:] - pred[:, :-1]) - (target[:, 1:] - target[:, :-1])).pow(2) * var).sum(-1).mean()
    return (position + velocity_weight * velocity) / 1e-6


def fit_motion(
    model: torch.nn.Module,
    data: MotionData,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    config: AudioMotionConfig,
    parameters: list[torch.nn.Parameter] | None = None,
    progress: bool = False,
    desc: str = "audio→motion",
    on_step: Callable[[int, float], None] | None = None,
) -> None:
    """The one audio → motion training loop, for a person's model, a residual on the prior, or the prior
    itself: ``config.steps`` AdamW steps (warm-up, cosine decay) on batches of ``config.batch`` runs of
    ``config.sequence`` usable frames drawn from ``data`` (by its weights), minimising ``loss(pred,
    target)`` of ``model(windows)`` ((B, T, K) each). ``parameters``: what to train (default: all of the
    model's). ``on_step(step, loss)`` is called after every step. Seeded by ``config.seed``. Raises
    :class:`GstalkError` when no sequence holds a run of ``config.sequence`` usable frames."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    starts = [_starts(u, config.sequence) for u in data.usable]
    if not any(len(s) for s in starts):
        raise GstalkError(
            f"the dataset has no run of {config.sequence} consecutive tracked training frames",
            "prepare a longer clip, or lower --audio-motion.sequence",
        )
    params = list(model.parameters()) if parameters is None else parameters
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * s / config.steps))
    )
    past, future = model.past, model.future
    bar = tqdm(total=config.steps, desc=desc, unit="it", disable=not progress)
    model.train()
    for step in range(config.steps):
        windows, targets = _batch(data, starts, past, future, config.batch, config.sequence, rng)
        total = loss(model(windows), targets)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        schedule.step()
        bar.update()
        value = float(total.detach())
        bar.set_postfix(loss=f"{value:.3g}")
        if on_step is not None:
            on_step(step, value)
    bar.close()
    model.eval()


def fit_audio_motion(
    ds: Dataset,
    basis: LowerFaceBasis,
    model: AudioMotion,
    config: AudioMotionConfig,
    progress: bool = False,
    data: MotionData | None = None,
) -> dict[str, float]:
    """Train a person's ``model`` (no prior) in place on ``ds``'s clip and augmented copies of it; returns
    the held-out figures (:func:`validate`) and the time taken."""
    start = time.perf_counter()
    coeffs = target_coefficients(ds, basis)
    data = data or build_motion_data(ds, coeffs, config.augmented_copies, config.seed, progress)
    clean = data.features[0][ds.train_ids]
    model.set_statistics(torch.from_numpy(clean.mean((0, 1))), torch.from_numpy(clean.std((0, 1))))
    fit_motion(model, data, lambda p, t: motion_loss(basis, p, t, config.velocity_weight), config,
               progress=progress)  # fmt: skip
    return {**validate(ds, basis, model, coeffs), "seconds": round(time.perf_counter() - start, 1)}
