"""Speech → face motion: a basis of the lower face's motion and the audio model that drives it.

- :class:`LowerFaceBasis`: the principal components of the tracked lower face's displacement from the
  canonical shape (head frame, metres), over the training frames. Vertices are weighted by how much they
  belong to the speech-driven lower face, the lips doubled, and the basis is orthonormal in that weighted
  space, so the squared error of (standardised) coefficients is exactly the weighted squared vertex error.
- :class:`AudioMotion`: audio windows of the frames around one frame → that frame's coefficients. A
  convolution over each window's feature frames (as ER-NeRF's AudioNet) encodes every frame of the
  context; a small transformer over the context (past and a short future) weighs them; a linear head
  gives the standardised coefficients. GaussianSpeech predicts FLAME vertices from audio with a lip-vertex
  loss in the same spirit.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..face.landmarks import LIPS_INNER, LIPS_OUTER
from ..face.mesh import N_MESH

LIPS = sorted({*LIPS_INNER, *LIPS_OUTER})


class LowerFaceBasis(nn.Module):
    """Standardised PCA coefficients ↔ lower-face displacement (N_MESH, 3) from the canonical shape.

    Stored: the mean displacement, and per component the displacement of one standard deviation (zero
    off the lower face); ``weights`` w in [0, 1] say how much a vertex belongs to the lower face and
    ``vertex_weights`` ω = w with the lips doubled are the loss weights."""

    def __init__(self, components: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(N_MESH, 3))
        self.register_buffer("basis", torch.zeros(components, N_MESH, 3))
        self.register_buffer("weights", torch.zeros(N_MESH))
        self.register_buffer("vertex_weights", torch.zeros(N_MESH))

    @property
    def components(self) -> int:
        return self.basis.shape[0]

    @classmethod
    def fit(
        cls, displacement: np.ndarray, weights: np.ndarray, components: int = 16
    ) -> tuple[LowerFaceBasis, np.ndarray]:
        """Fit to (T, N_MESH, 3) displacements of training frames; returns the basis and their
        coefficients."""
        omega = weights.astype(np.float64).copy()
        omega[LIPS] *= 2.0
        root = np.sqrt(omega)[None, :, None]
        x = displacement.astype(np.float64)
        mean = x.mean(0)
        _, s, vt = np.linalg.svd(((x - mean) * root).reshape(len(x), -1), full_matrices=False)
        k = min(components, vt.shape[0])
        std = np.maximum(s[:k] / np.sqrt(max(len(x) - 1, 1)), 1e-9)
        directions = vt[:k].reshape(k, N_MESH, 3)  # orthonormal in the ω-weighted space
        inv_root = np.where(root[0] > 0, 1 / np.where(root[0] > 0, root[0], 1), 0.0)
        basis = cls(k)
        basis.mean.copy_(torch.from_numpy(mean).float())
        basis.basis.copy_(torch.from_numpy(directions * inv_root[None] * std[:, None, None]).float())
        basis.weights.copy_(torch.from_numpy(weights).float())
        basis.vertex_weights.copy_(torch.from_numpy(omega).float())
        coeffs = (((x - mean) * root).reshape(len(x), -1) @ vt[:k].T) / std
        return basis, coeffs.astype(np.float32)

    def project(self, displacement: Tensor) -> Tensor:
        """Standardised coefficients (..., K) of raw displacements (..., N_MESH, 3)."""
        weighted = self.basis * self.vertex_weights[:, None]
        norms = (self.basis * weighted).sum((-1, -2))  # the variance of each component
        return torch.einsum("...nc,knc->...k", displacement - self.mean, weighted) / norms

    def reconstruct(self, coeffs: Tensor) -> Tensor:
        """(..., N_MESH, 3) raw lower-face displacement of standardised coefficients (..., K); meaningful
        where ``weights`` > 0."""
        return self.mean + torch.einsum("...k,knc->...nc", coeffs, self.basis)

    def component_variances(self) -> Tensor:
        """(K,) each component's ω-weighted squared norm, Σ_n ω_n |basis_k,n|² (its variance, m²)."""
        return (self.basis.pow(2).sum(-1) * self.vertex_weights).sum(-1)

    def weighted_error(self, coeffs: Tensor, target: Tensor) -> Tensor:
        """Mean squared ω-weighted vertex error (m²) between two sets of coefficients (..., K).

        The components are orthogonal in the ω-weighted space (they come from one SVD), so the error of
        the reconstructed meshes, Σ_n ω_n |d_n|² / Σ_n ω_n, is Σ_k Δc_k² σ_k² / Σ_n ω_n: computed on K
        numbers rather than on the whole mesh (the same value; ``tests/test_train.py`` checks it)."""
        return ((coeffs - target).pow(2) * self.component_variances()).sum(-1) / self.vertex_weights.sum()

    def mesh_error(self, coeffs: Tensor, target: Tensor) -> Tensor:
        """:meth:`weighted_error` computed on the reconstructed meshes (the definition)."""
        d = torch.einsum("...k,knc->...nc", coeffs - target, self.basis)
        return (d.pow(2).sum(-1) * self.vertex_weights).sum(-1) / self.vertex_weights.sum()


class AudioMotion(nn.Module):
    """Audio windows of a run of frames → each frame's standardised coefficients.

    ``forward`` takes (B, T, W, C) windows and returns (B, T - past - future, K): the frames that have
    their whole receptive field (``past`` frames before, ``future`` after) inside the run. Each frame's
    window is encoded once (a projection of every feature frame, then of the whole window); residual
    temporal convolutions of kernel 4, each reaching two frames back and one ahead (``future`` of them)
    or three back, give the receptive field; a linear head gives the coefficients."""

    def __init__(self, window: int, channels: int, components: int, past: int = 6, future: int = 3,
                 dim: int = 96, norm: str = "frame", bands: int = 32,
                 input_dropout: float = 0.0) -> None:  # fmt: skip
        super().__init__()
        if past < 2 * future or (past - 2 * future) % 3:
            raise ValueError(
                f"context of {past} frames before and {future} after: the temporal convolutions reach "
                "2 back and 1 ahead each, or 3 back; use past = 2 * future + 3 * n"
            )
        self.window, self.channels, self.past, self.future = window, channels, past, future
        #: per temporal layer, the frames it reaches back and ahead (kernel 4 either way)
        self.reach = [(2, 1)] * future + [(3, 0)] * ((past - 2 * future) // 3)
        self.register_buffer("feature_mean", torch.zeros(channels))
        self.register_buffer("feature_std", torch.ones(channels))
        # each feature frame projected to `bands` (shared over the window), then the window to `dim`: two
        # matrix products, far cheaper on a CPU than small convolutions
        self.input_dropout = input_dropout
        self.frame = nn.Sequential(
            nn.Linear(channels, bands), nn.GELU(), nn.Flatten(), nn.Linear(window * bands, dim), nn.GELU()
        )
        self.temporal = nn.ModuleList(nn.Conv1d(dim, dim, 4) for _ in self.reach)
        # "frame": LayerNorm of each frame's features (causal, the same for any segment); "sequence":
        # GroupNorm(1) over channels and time (statistics of the whole input), as older runs were trained
        self.norm = norm
        self.norms = nn.ModuleList(
            (nn.LayerNorm(dim) if norm == "frame" else nn.GroupNorm(1, dim)) for _ in self.reach
        )
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(dim, components)

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp(min=1e-3))

    @torch.no_grad()
    def predict(self, features: np.ndarray, chunk: int = 1024) -> Tensor:
        """(T, K) coefficients for every frame of (T, W, C) features (edges padded by repetition)."""
        n = len(features)
        device = self.feature_mean.device
        out = []
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            idx = np.clip(np.arange(start - self.past, stop + self.future), 0, n - 1)
            windows = torch.from_numpy(np.asarray(features[idx], np.float32)).to(device)[None]
            out.append(self(windows)[0])
        return torch.cat(out) if out else torch.zeros(0, self.head.out_features, device=device)

    def forward(self, windows: Tensor) -> Tensor:
        b, t, w, c = windows.shape
        x = ((windows - self.feature_mean) / self.feature_std).reshape(b * t, w, c)
        x = torch.nn.functional.dropout(x, self.input_dropout, self.training)
        x = self.frame(x).reshape(b, t, -1).transpose(1, 2)  # (B, D, T)
        for (back, ahead), conv, norm in zip(self.reach, self.temporal, self.norms):
            h = norm(x.transpose(1, 2)).transpose(1, 2) if self.norm == "frame" else norm(x)
            x = x[..., back : x.shape[-1] - ahead] + conv(self.dropout(torch.nn.functional.gelu(h)))
        return self.head(x.transpose(1, 2))
