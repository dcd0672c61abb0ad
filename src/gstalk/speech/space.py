"""The identity-free space the motion prior speaks in: how a lower face moves from its own rest, in units
of its own motion.

Every person's tracked mesh lives in its own head frame (``face.pose``: pose removed, metric, scaled so
the outer eye corners are 9 cm apart), and MediaPipe's 468 vertices are the same points on every face.
What differs between people is the shape of the face at rest and how far they move their lips and jaw
when they talk. Both are removed here:

- **rest**: the mean mesh of a person's frames whose inner-lip gap is among their lowest tenth (lips
  closed, or as closed as this person's get while talking);
- **amplitude**: the root mean square of their lower face's ω-weighted displacement about its mean over
  the frames (metres), the "how much this person moves" of one clip.

A frame's *motion* is ``(mesh − rest) / amplitude`` on the 468 vertices, and the prior's space is the
principal components of that motion over the corpus (:class:`PriorSpace`), weighted by ω (how much a
vertex belongs to the speech-driven lower face, ``face.mesh.lower_face_weights``, with the lips doubled)
and standardised, as ``speech.motion.LowerFaceBasis`` is for one person: zero weight above the nose, so
the space says nothing of the upper face (blinks and brows come from elsewhere).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from ..face.mesh import N_MESH, lower_face_weights, mouth_gap
from .motion import LIPS

#: the share of a person's frames, by inner-lip gap, whose mean is their rest shape
REST_QUANTILE = 0.1


@dataclass(frozen=True)
class Normalisation:
    """A person's rest shape and amplitude (see the module docstring)."""

    rest: np.ndarray
    """(468, 3) float64 metres, head frame: the mean of the most closed frames."""
    amplitude: float
    """Metres: RMS of the ω-weighted lower-face displacement about its mean."""


def omega(weights: np.ndarray) -> np.ndarray:
    """(468,) float64 loss weights ω: the lower-face weights with the lips doubled."""
    out = np.asarray(weights, np.float64).copy()
    out[LIPS] *= 2.0
    return out


def normalisation(mesh: np.ndarray, valid: np.ndarray, weights: np.ndarray) -> Normalisation:
    """The rest shape and amplitude of one person's tracked head-frame meshes (T, >=468, 3) over the frames
    where ``valid`` (T,) is true, with lower-face weights ``weights`` (468,). Raises ValueError with fewer
    than 2 valid frames."""
    m = np.asarray(mesh[:, :N_MESH], np.float64)[np.asarray(valid, bool)]
    if len(m) < 2:
        raise ValueError("a person's normalisation needs at least 2 tracked frames")
    gap = mouth_gap(m)
    rest = m[gap <= np.quantile(gap, REST_QUANTILE)].mean(0)
    d = (m - m.mean(0)) * np.asarray(weights, np.float64)[None, :, None]
    w = omega(weights)
    amplitude = math.sqrt(float(((d**2).sum(-1) @ w).mean() / w.sum()))
    return Normalisation(rest, max(amplitude, 1e-6))


def motion_of(mesh: np.ndarray, norm: Normalisation) -> np.ndarray:
    """(T, 468, 3) float32 motion of head-frame meshes (T, >=468, 3) in a person's normalisation."""
    return ((np.asarray(mesh[:, :N_MESH], np.float64) - norm.rest) / norm.amplitude).astype(np.float32)


class PriorSpace(nn.Module):
    """Standardised principal components of the corpus's motion (see the module docstring) ↔ motion
    (468, 3). Buffers: ``mean`` (468, 3), ``basis`` (K, 468, 3) (a component's one standard deviation),
    ``weights`` (468,) (the corpus's mean lower-face weights), ``vertex_weights`` ω, ``amplitude`` (1,)
    (the median amplitude over the corpus's people, metres: the motion of a person whose own amplitude
    is unknown, as from one photo)."""

    def __init__(self, components: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(N_MESH, 3))
        self.register_buffer("basis", torch.zeros(components, N_MESH, 3))
        self.register_buffer("weights", torch.zeros(N_MESH))
        self.register_buffer("vertex_weights", torch.zeros(N_MESH))
        self.register_buffer("amplitude", torch.ones(1))

    @property
    def components(self) -> int:
        return self.basis.shape[0]

    @classmethod
    def fit(cls, motions: list[np.ndarray], weights: np.ndarray, amplitudes: list[float],
            components: int = 16) -> PriorSpace:  # fmt: skip
        """The space of ``motions`` (each (T_i, 468, 3), :func:`motion_of`; every frame counts once), with
        lower-face ``weights`` (468,) and the people's ``amplitudes`` (metres). Raises ValueError with
        fewer frames than components."""
        x = np.concatenate([np.asarray(m, np.float64) for m in motions]).reshape(-1, N_MESH * 3)
        if len(x) <= components:
            raise ValueError(f"{len(x)} frames cannot give {components} components")
        w = omega(weights)
        root = np.repeat(np.sqrt(w), 3)
        mean = x.mean(0)
        _, s, vt = np.linalg.svd((x - mean) * root, full_matrices=False)
        std = np.maximum(s[:components] / math.sqrt(len(x) - 1), 1e-9)
        inv_root = np.where(root > 0, 1 / np.where(root > 0, root, 1), 0.0)
        space = cls(components)
        space.mean.copy_(torch.from_numpy(mean.reshape(N_MESH, 3)))
        basis = (vt[:components] * inv_root[None] * std[:, None]).reshape(components, N_MESH, 3)
        space.basis.copy_(torch.from_numpy(basis))
        space.weights.copy_(torch.from_numpy(np.asarray(weights, np.float32)))
        space.vertex_weights.copy_(torch.from_numpy(w))
        space.amplitude.fill_(float(np.median(amplitudes)))
        return space

    def project(self, motion: Tensor) -> Tensor:
        """(..., K) standardised coefficients of motions (..., 468, 3)."""
        weighted = self.basis * self.vertex_weights[:, None]
        norms = (self.basis * weighted).sum((-1, -2))
        return torch.einsum("...nc,knc->...k", motion - self.mean, weighted) / norms

    def reconstruct(self, coeffs: Tensor) -> Tensor:
        """(..., 468, 3) motion of standardised coefficients (..., K)."""
        return self.mean + torch.einsum("...k,knc->...nc", coeffs, self.basis)

    def component_variances(self) -> Tensor:
        """(K,) each component's ω-weighted squared norm (its variance, in motion units squared)."""
        return (self.basis.pow(2).sum(-1) * self.vertex_weights).sum(-1)

    def gap_direction(self) -> Tensor:
        """(K,) how each coefficient opens the lips at the middle of the mouth (the vertical distance of
        vertices 14 and 13, in motion units): a linear stand-in for ``face.mesh.mouth_gap``."""
        return self.basis[:, 14, 1] - self.basis[:, 13, 1]


def canonical_weights(canonical: np.ndarray) -> np.ndarray:
    """(468,) float32 lower-face weights of a canonical shape (``face.mesh.lower_face_weights``)."""
    return lower_face_weights(np.asarray(canonical))


__all__ = ["REST_QUANTILE", "Normalisation", "PriorSpace", "canonical_weights", "motion_of", "normalisation"]
