"""A person's audio → motion from the prior (the audio → motion stage of ``gstalk train`` with ``--prior``).

Given the dataset's tracked lower face and the motion prior (``speech.prior``), fill a
``speech.person.PersonMotion``:

1. **Normalise** the person's face as the prior's corpus was (``speech.space``): their rest shape and
   amplitude from the training frames.
2. **Readout toward the clip**: the prior's readout, moved toward what this clip shows by ridge regression
   that shrinks toward the prior's weights (``prior_ridge``: W = W_prior + ΔW, ΔW = argmin ‖X̃ΔW − R‖² +
   λ‖ΔW‖², R what the prior misses on the clip's frames and augmented copies of its speech). With little
   clip the readout stays the prior's; other voices drive it as the prior does.
3. **Retarget** (``speech.person.geometric_retarget``): the motion placed at the person's rest with their
   amplitude, projected on their own basis. Computed from geometry, never fitted to predictions.
4. Optionally a **residual** network (``residual_steps`` > 0): an ``AudioMotion`` fitted with the one
   audio → motion loop (``train.audio_motion.fit_motion``) to what the retargeted readout leaves, its
   output penalised so it stays small.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from ..config import AudioMotionConfig
from ..data.dataset import Dataset
from ..face.mesh import N_MESH
from ..speech import feature_kind
from ..speech.motion import LowerFaceBasis
from ..speech.person import PersonMotion, geometric_retarget
from ..speech.prior import MotionPrior
from ..speech.space import Normalisation, motion_of, normalisation
from .audio_motion import MotionData, augment_sequence, fit_motion, motion_loss, target_coefficients, validate


def person_motion_data(ds: Dataset, basis: LowerFaceBasis, copies: int, seed: int,
                       progress: bool = False) -> tuple[MotionData, Normalisation]:  # fmt: skip
    """The person's training frames and ``copies`` augmented copies of their speech, with the tracked
    motion (``speech.space.motion_of``, flattened to (T, 1404); pauses aim at the rest, whose motion is
    zero) as targets, and the person's normalisation. Independent of any prior, so one build serves
    several (``benchmarks/prior.py`` fits a person from each fold's prior)."""
    from ..media import read_audio

    train = np.zeros(ds.n_frames, bool)
    train[ds.train_ids] = True
    train &= ds.valid
    norm = normalisation(ds.tracks.mesh, train, basis.weights.numpy())
    motion = motion_of(ds.tracks.mesh[:, :N_MESH], norm).reshape(ds.n_frames, -1)
    data = MotionData([np.asarray(ds.audio_features, np.float32)], [motion], [train])
    if copies:
        rng = np.random.default_rng(seed)
        rest = np.zeros(motion.shape[1], np.float32)
        data.extend(augment_sequence(read_audio(ds.audio_path), motion, train, rest, ds.fps,
                                     feature_kind(ds.audio_spec), copies, rng, progress))  # fmt: skip
    return data, norm


def in_prior_space(data: MotionData, prior: MotionPrior) -> MotionData:
    """``data`` with its motion targets (T, 1404) projected on the prior's space (T, K_p)."""
    with torch.no_grad():
        targets = [
            prior.space.project(torch.from_numpy(t.reshape(len(t), N_MESH, 3)).to(prior.space.mean))
            .cpu()
            .numpy()
            for t in data.targets
        ]
    return MotionData(data.features, targets, data.usable, data.weights)


#: the weight of digital silence in a person's readout fit, as a share of the clip's usable frames: its
#: frames must give the rest (lips together), which the clip's few pauses teach only loosely
SILENCE_SHARE = 0.1
#: seconds of digital silence whose features stand for it in the fit
SILENCE_SECONDS = 2.0


def silence_states(ds: Dataset) -> np.ndarray:
    """(T, ...) the dataset's features of :data:`SILENCE_SECONDS` of digital silence, computed as any
    audio's are (``speech.feature_kind``)."""
    kind = feature_kind(ds.audio_spec)
    n = round(SILENCE_SECONDS * ds.fps)
    audio = np.zeros(round(SILENCE_SECONDS * kind.spec.rate), np.float32)
    return np.asarray(kind.compute(audio, n, ds.fps), np.float32)


def fit_readout_toward_prior(person: PersonMotion, data: MotionData, ridge: float,
                             silence: np.ndarray | None = None) -> None:  # fmt: skip
    """Move ``person``'s readout (a copy of the prior's) toward ``data`` (usable frames of every sequence):
    ΔW = (X̃ᵀX̃ + λI)⁻¹ X̃ᵀ(R − R̄), R what the readout must give for the targets (their distance from the
    origin over the gain, plus the origin) minus the prior's readout, X̃ the features
    standardised as the prior's are; the bias takes R̄. ``silence``: features of digital silence, whose
    frames aim at the origin (the rest), weighted :data:`SILENCE_SHARE` of the usable frames in all (with
    no usable frame, as for a photo, they alone set the bias: silence gives the rest). In float64."""
    readout = person.readout
    gain = person.gain.double().numpy()
    origin = person.origin.double().numpy()
    weight_p, bias_p = readout.weight.double().numpy(), readout.bias.double().numpy()
    d = readout.weight.shape[1]
    rows = []  # (standardised features, what the readout misses, the rows' weight)
    with torch.no_grad():
        for feats, targets, usable in zip(data.features, data.targets, data.usable):
            idx = np.flatnonzero(usable)
            if not len(idx):
                continue
            x = readout.standardise(torch.from_numpy(np.asarray(feats[idx], np.float32))).double().numpy()
            wanted = origin + (targets[idx] - origin) / gain
            rows.append((x, wanted - (x @ weight_p.T + bias_p), 1.0))
        count = sum(len(x) for x, _, _ in rows)
        if silence is not None and len(silence):  # with no clip (a photo), silence alone moves the bias
            x = readout.standardise(torch.from_numpy(np.asarray(silence, np.float32))).double().numpy()
            share = SILENCE_SHARE * count / len(x) if count else 1.0
            rows.append((x, origin - (x @ weight_p.T + bias_p), share))
        if not rows:
            return
    total_w = sum(w * len(x) for x, _, w in rows)
    mean_x = sum(w * x.sum(0) for x, _, w in rows) / total_w
    mean_r = sum(w * r.sum(0) for _, r, w in rows) / total_w
    gram, rhs = np.zeros((d, d)), np.zeros((d, gain.size))
    for x, r, w in rows:
        xc = x - mean_x
        gram += w * (xc.T @ xc)
        rhs += w * (xc.T @ (r - mean_r))
    delta = np.linalg.solve(gram + ridge * np.eye(d), rhs)
    with torch.no_grad():
        readout.weight += torch.from_numpy(delta.T).to(readout.weight)
        readout.bias += torch.from_numpy(mean_r - mean_x @ delta).to(readout.bias)


def fit_person_motion(
    ds: Dataset,
    basis: LowerFaceBasis,
    person: PersonMotion,
    prior: MotionPrior,
    config: AudioMotionConfig,
    progress: bool = False,
    built: tuple[MotionData, Normalisation] | None = None,
) -> dict[str, float]:
    """Fill ``person`` (see the module docstring) from ``prior`` and ``ds``'s training frames (``built``:
    :func:`person_motion_data` made already); returns the held-out figures
    (``train.audio_motion.validate``) and the seconds taken."""
    start = time.perf_counter()
    person.start_from(prior)
    motion_data, norm = built or person_motion_data(ds, basis, config.augmented_copies, config.seed, progress)
    data = in_prior_space(motion_data, prior)
    fit_readout_toward_prior(person, data, config.prior_ridge, silence_states(ds))
    person.set_retarget(*geometric_retarget(prior.space, basis, norm, ds.tracks.canonical_shape))
    person.set_lip_contact(basis, ds.tracks.canonical_shape)
    coeffs = target_coefficients(ds, basis)
    if person.residual is not None and config.residual_steps > 0:
        _fit_residual(ds, basis, person, coeffs, data, config, progress)
    figures = validate(ds, basis, person, coeffs)
    return {**figures, "seconds": round(time.perf_counter() - start, 1)}


def photo_person_motion(ds: Dataset, basis: LowerFaceBasis, person: PersonMotion, prior: MotionPrior) -> dict:
    """Fill ``person`` for a photo (no speech to move the readout toward): the prior's readout as it is,
    and, as ``basis`` is the prior's space on the photo's face (``model.init.prior_basis``), the identity
    retarget; the lips kept from crossing on the photo's face. Returns what ``audio_motion.json`` holds."""
    start = time.perf_counter()
    person.start_from(prior)
    k = basis.components
    if k != prior.space.basis.shape[0]:
        raise ValueError("a photo's basis must be the prior's space")
    person.set_retarget(torch.eye(k), torch.zeros(k))
    person.set_lip_contact(basis, ds.tracks.canonical_shape)
    return {"source": "motion prior (one photo: no speech to fit)", "components": k,
            "amplitude_mm": round(1000 * float(prior.space.amplitude), 3),
            "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip


def _fit_residual(ds, basis, person, coeffs, data, config, progress) -> None:
    """Fit ``person.residual`` to what the retargeted readout leaves of the codes, on the clip and its
    copies (their codes: their prior-space targets retargeted), its output penalised toward zero."""
    retarget, offset = person.retarget.double().numpy(), person.offset.double().numpy()
    codes = [coeffs] + [t @ retarget.T + offset for t in data.targets[1:]]
    left = []
    with torch.no_grad():
        for feats, code in zip(data.features, codes):
            base = person.from_prior(torch.from_numpy(np.asarray(feats, np.float32))).double().numpy()
            left.append((code - base).astype(np.float32))
    clean = data.features[0][ds.train_ids]
    residual = person.residual
    residual.set_statistics(torch.from_numpy(clean.mean((0, 1))), torch.from_numpy(clean.std((0, 1))))
    steps = dataclasses.replace(config, steps=config.residual_steps)

    def loss(pred, target):  # the error, plus the residual's own size (both ω-weighted mm²)
        size = motion_loss(basis, pred, torch.zeros_like(pred), 0.0)
        return motion_loss(basis, pred, target, config.velocity_weight) + config.residual_penalty * size

    fit_motion(residual, MotionData(data.features, left, data.usable, data.weights), loss, steps,
               progress=progress, desc="residual")  # fmt: skip


__all__ = [
    "fit_person_motion",
    "fit_readout_toward_prior",
    "in_prior_space",
    "person_motion_data",
    "photo_person_motion",
]
