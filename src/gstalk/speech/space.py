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
from torch import Tensor

from ..face.mesh import N_MESH, lower_face_weights, mouth_gap
from .motion import LIPS, LowerFaceBasis

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


class PriorSpace(LowerFaceBasis):
    """Standardised principal components of the corpus's motion (see the module docstring) ↔ motion
    (468, 3): a ``speech.motion.LowerFaceBasis`` (its ``mean``, ``basis``, ``weights``, ``vertex_weights``,
    ``project`` and ``reconstruct``) of identity-free motion rather than of one person's displacements,
    plus ``amplitude`` (1,) (the median amplitude over the corpus's people, metres: the motion of a person
    whose own amplitude is unknown, as from one photo)."""

    def __init__(self, components: int) -> None:
        super().__init__(components)
        self.register_buffer("amplitude", torch.ones(1))

    @classmethod
    def fit(cls, motions: list[np.ndarray], weights: np.ndarray, amplitudes: list[float],
            components: int = 16) -> PriorSpace:  # fmt: skip
        """The space of ``motions`` (each (T_i, 468, 3), :func:`motion_of`; every frame counts once), with
        lower-face ``weights`` (468,) and the people's ``amplitudes`` (metres). Raises ValueError with
        fewer frames than components."""
        x = np.concatenate([np.asarray(m, np.float64).reshape(-1, N_MESH, 3) for m in motions])
        if len(x) <= components:
            raise ValueError(f"{len(x)} frames cannot give {components} components")
        space, _ = super().fit(x, np.asarray(weights, np.float32), components)
        space.amplitude.fill_(float(np.median(amplitudes)))
        return space

    def gap_direction(self) -> Tensor:
        """(K,) how each coefficient opens the lips at the middle of the mouth (the vertical distance of
        vertices 14 and 13, in motion units): a linear stand-in for ``face.mesh.mouth_gap``."""
        return self.basis[:, 14, 1] - self.basis[:, 13, 1]


def canonical_weights(canonical: np.ndarray) -> np.ndarray:
    """(468,) float32 lower-face weights of a canonical shape (``face.mesh.lower_face_weights``)."""
    return lower_face_weights(np.asarray(canonical))


__all__ = ["REST_QUANTILE", "Normalisation", "PriorSpace", "canonical_weights", "motion_of", "normalisation"]
