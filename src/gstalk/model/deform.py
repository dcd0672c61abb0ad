"""FG-3DGS's frequency-aware deformation networks.

- :class:`FaceDeformer` (low frequency, eq. 6–8): spatial gates computed from each Gaussian's encoded
  position modulate the audio and expression features; an MLP maps the concatenation to Δμ, Δs, Δq.
- :class:`RegionDeformer` (high frequency, eq. 9–12): each Gaussian's spatial feature queries the driving
  signal's tokens of the neighbouring frames by cross-attention; a sigmoid gate computed from the signal
  scales the result, and a feed-forward network with two residual connections yields Δμ only. The
  Gaussian's own spatial feature also enters the feed-forward path (projected into its stream): without
  it, a steady sound gives every Gaussian of the region nearly the same Δμ, and the upper and lower lips
  could not move apart.

In gstalk these refine, as residuals, the motion the tracked (or predicted) mesh already gives.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def mlp(in_dim: int, hidden: int, out_dim: int, layers: int = 2) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


def _zero_last(module: nn.Sequential) -> None:
    """Start from zero deformation: the canonical Gaussians are the first guess."""
    nn.init.zeros_(module[-1].weight)
    nn.init.zeros_(module[-1].bias)


class FaceDeformer(nn.Module):
    """Δμ (3), Δ log-scale (3), Δq (4) for low-frequency Gaussians from spatial features h, audio f_a and
    expression f_e."""

    def __init__(self, spatial_dim: int, audio_dim: int, expr_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.gate_audio = nn.Sequential(mlp(spatial_dim, hidden, audio_dim), nn.Sigmoid())  # Γ_sp^a
        self.gate_expr = nn.Sequential(mlp(spatial_dim, hidden, expr_dim), nn.Sigmoid())  # Γ_sp^e
        self.deform = mlp(spatial_dim + audio_dim + expr_dim, hidden, 10, layers=3)  # Γ_de^f
        _zero_last(self.deform)

    def forward(self, h: Tensor, f_a: Tensor, f_e: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """h (N, S); f_a (A,), f_e (E,) for the current frame."""
        n = h.shape[0]
        s_a, s_e = self.gate_audio(h), self.gate_expr(h)
        z = torch.cat([h, s_a * f_a.expand(n, -1), s_e * f_e.expand(n, -1)], dim=-1)
        out = self.deform(z)
        return out[:, :3], out[:, 3:6], out[:, 6:10]


class RegionDeformer(nn.Module):
    """Δμ for high-frequency Gaussians: gated cross-attention from spatial features to signal tokens."""

    def __init__(self, spatial_dim: int, signal_dim: int, dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.query = nn.Linear(spatial_dim, dim)
        self.own = nn.Linear(spatial_dim, dim)  # the Gaussian's spatial feature into the feed-forward path
        self.key = nn.Linear(signal_dim, dim)
        self.value = nn.Linear(signal_dim, dim)
        self.signal = nn.Linear(signal_dim, dim)
        self.gate = nn.Sequential(mlp(signal_dim, hidden, 1), nn.Sigmoid())  # Γ_ga, a scalar
        self.ff1 = mlp(dim, hidden, dim)  # φ'_ff
        self.ff2 = mlp(dim, hidden, dim)  # φ''_ff
        self.deform = mlp(dim, hidden, 3)  # Γ_de^r
        _zero_last(self.deform)
        self.scale = dim**-0.5

    def forward(self, h: Tensor, tokens: Tensor, current: Tensor) -> Tensor:
        """h (N, S) spatial features; tokens (T, F) the signal over neighbouring frames; current (F,)."""
        q = self.query(h)  # (N, D)
        k, v = self.key(tokens), self.value(tokens)  # (T, D)
        attn = torch.softmax(q @ k.T * self.scale, dim=-1)  # (N, T)
        z = self.gate(current) * (attn @ v)  # λ_r ⊙ φ_cm
        f = self.signal(current) + self.own(h)
        z1 = self.ff1(f + z)
        z2 = self.ff2(z1 + z)
        return self.deform(z2)
