"""One person's audio → motion, starting from the speaker-independent prior.

:class:`PersonMotion` predicts a person's lower-face code (the standardised coefficients of their own
``LowerFaceBasis``) from speech features in three steps:

1. a readout of the frame's speech states gives the identity-free motion (the lower face about its rest,
   in units of its amplitude; ``speech.space``): the prior's (``speech.prior.MotionPrior``), moved
   toward what this person's clip shows by a ridge regression that shrinks toward the prior's weights
   (``train.person``: the less clip, the closer to the prior), and copied into the person's model;
2. the **retarget** places that motion on this face: ``rest + amplitude · motion``, minus the person's
   canonical shape, projected on their basis. It is linear (a (K, K_p) matrix and a (K,) offset), computed
   from the person's own geometry (:func:`geometric_retarget`), never fitted to the prior's predictions
   (which would shrink the motion toward the mean);
3. an optional **residual**: a small ``AudioMotion`` fitted on the person's clip to what the retarget
   leaves, for the person's own articulation (``train.audio_motion``), kept small so other voices still
   drive the face the way the prior does.

With no clip at all (one photo), the person's basis is the prior's space itself, scaled by the corpus's
median amplitude and placed at the photo's rest (:func:`basis_from_prior`), and the retarget is the
identity.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..face.mesh import N_MESH
from .motion import AudioMotion, LowerFaceBasis
from .prior import MotionPrior, PriorShape, StateReadout
from .space import Normalisation, PriorSpace


@torch.no_grad()
def geometric_retarget(
    space: PriorSpace, basis: LowerFaceBasis, norm: Normalisation, canonical: np.ndarray
) -> tuple[Tensor, Tensor]:
    """(K, K_p) matrix and (K,) offset mapping the prior's coefficients to ``basis``'s: the motion
    ``space.reconstruct(z)`` placed on the face at ``norm.rest`` with ``norm.amplitude``, minus the
    person's ``canonical`` (>=468, 3) shape, projected on ``basis`` (both linear in z)."""
    rest = torch.from_numpy(np.asarray(norm.rest - canonical[:N_MESH], np.float32))
    amp = float(norm.amplitude)
    zero = basis.project(rest + amp * space.mean)  # the code of z = 0
    columns = basis.project(rest + amp * (space.mean + space.basis)) - zero  # (K_p, K)
    return columns.T.contiguous(), zero


def basis_from_prior(space: PriorSpace, norm: Normalisation, canonical: np.ndarray) -> LowerFaceBasis:
    """A person's ``LowerFaceBasis`` when there is no clip to fit one (one photo): the prior's components
    scaled by ``norm.amplitude``, about the face's rest ``norm.rest`` (468, 3), as displacements from
    ``canonical``; its code is then the prior's coefficients."""
    basis = LowerFaceBasis(space.components)
    amp = float(norm.amplitude)
    with torch.no_grad():
        rest = torch.from_numpy(np.asarray(norm.rest - canonical[:N_MESH], np.float32))
        basis.mean.copy_(rest + amp * space.mean)
        basis.basis.copy_(amp * space.basis)
        basis.weights.copy_(space.weights)
        basis.vertex_weights.copy_(space.vertex_weights)
    return basis


class PersonMotion(nn.Module):
    """Speech features (T, W, C) → a person's lower-face code (T, K): the readout in the prior's space,
    retargeted, plus an optional residual (see the module docstring). Frame by frame, except the
    residual's temporal context.

    ``shape``: the prior's; ``components``: K, the person's basis; ``residual``: None, or an
    ``AudioMotion`` with the prior's window and channels and K outputs that takes no future frames."""

    def __init__(self, shape: PriorShape, components: int, residual: AudioMotion | None = None) -> None:
        super().__init__()
        self.shape = shape
        self.readout = StateReadout(shape.window, shape.channels, shape.components)
        self.register_buffer("gain", torch.ones(shape.components))
        self.register_buffer("origin", torch.zeros(shape.components))
        self.register_buffer("retarget", torch.zeros(components, shape.components))
        self.register_buffer("offset", torch.zeros(components))
        # the signed inner-lip gap of a code c is lip_gap + c · lip_direction (metres, + open)
        self.register_buffer("lip_gap", torch.zeros(()))
        self.register_buffer("lip_direction", torch.zeros(components))
        if residual is not None and residual.future:
            raise ValueError("the residual may not read future frames")
        self.residual = residual

    @property
    def past(self) -> int:
        return self.residual.past if self.residual is not None else 0

    @property
    def future(self) -> int:
        return 0

    def start_from(self, prior: MotionPrior) -> None:
        """Copy the prior's readout, gain and origin (the person's fit then moves the readout)."""
        self.readout.load_state_dict(prior.readout.state_dict())
        self.gain.copy_(prior.gain)
        self.origin.copy_(prior.origin)

    def set_retarget(self, matrix: Tensor, offset: Tensor) -> None:
        self.retarget.copy_(matrix)
        self.offset.copy_(offset)

    @torch.no_grad()
    def set_lip_contact(self, basis: LowerFaceBasis, canonical: np.ndarray) -> None:
        """Where the lips meet, for ``basis``'s codes on the face of ``canonical`` (>=468, 3): the signed
        vertical gap of the inner lips' middle (vertex 14 below 13, head frame, y down) is linear in the
        code. Codes are kept from crossing it (:meth:`forward`)."""
        rest = float(canonical[14, 1] - canonical[13, 1]) + float(basis.mean[14, 1] - basis.mean[13, 1])
        self.lip_gap.fill_(rest)
        self.lip_direction.copy_(basis.basis[:, 14, 1] - basis.basis[:, 13, 1])

    def motion(self, windows: Tensor) -> Tensor:
        """(..., W, C) → (..., K_p): the identity-free motion coefficients."""
        return self.origin + self.gain * (self.readout(windows) - self.origin)

    def contact(self, codes: Tensor) -> Tensor:
        """``codes`` (..., K) moved, where they would push the lower lip above the upper one, along the
        gap's direction to where the lips just meet (no lips passing through each other; a lip press stays
        a press)."""
        norm = self.lip_direction.pow(2).sum()
        if float(norm) == 0.0:
            return codes
        gap = self.lip_gap + codes @ self.lip_direction
        return codes + (torch.relu(-gap) / norm)[..., None] * self.lip_direction

    def from_prior(self, windows: Tensor) -> Tensor:
        """(..., W, C) → (..., K): the retargeted readout alone."""
        return self.motion(windows) @ self.retarget.T + self.offset

    def forward(self, windows: Tensor) -> Tensor:
        """(B, T, W, C) → (B, T - past, K) codes, the lips kept from crossing (:meth:`contact`)."""
        codes = self.from_prior(windows[:, self.past :])
        if self.residual is not None:
            codes = codes + self.residual(windows)
        return self.contact(codes)

    @torch.no_grad()
    def predict(self, features: np.ndarray, chunk: int = 1024) -> Tensor:
        """(T, K) codes for every frame of (T, W, C) features (edges padded by repetition)."""
        n = len(features)
        device = self.offset.device
        out = []
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            idx = np.clip(np.arange(start - self.past, stop), 0, n - 1)
            windows = torch.from_numpy(np.asarray(features[idx], np.float32)).to(device)[None]
            out.append(self(windows)[0])
        return torch.cat(out) if out else torch.zeros(0, self.offset.shape[0], device=device)


__all__ = ["PersonMotion", "basis_from_prior", "geometric_retarget"]
