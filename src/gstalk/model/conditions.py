"""Encoders of the driving signals: audio windows and expression features, smoothed over time.

Both produce, for the current frame, one vector (for the face's gated MLP) and a short sequence of tokens
for the neighbouring frames (for the mouth's and eyes' cross-attention).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AudioEncoder(nn.Module):
    """(B, T, W, C) audio windows of T neighbouring frames → (B, T, D) per-frame features (τ_a).

    A 1D convolution stack over the W feature frames of each window, as in ER-NeRF's AudioNet, after a
    per-channel normalisation learned from the training clip's statistics.
    """

    def __init__(self, in_dim: int, window: int, out_dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.window, self.channels = window, in_dim
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        layers: list[nn.Module] = [nn.Conv1d(in_dim, hidden, 3, padding=1), nn.LeakyReLU(0.02)]
        w = window
        while w > 2:
            layers += [nn.Conv1d(hidden, hidden, 3, stride=2, padding=1), nn.LeakyReLU(0.02)]
            w = (w + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(hidden * w, hidden), nn.LeakyReLU(0.02), nn.Linear(hidden, out_dim))

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-3))

    def forward(self, windows: Tensor) -> Tensor:
        b, t, w, c = windows.shape
        x = ((windows - self.mean) / self.std).reshape(b * t, w, c).transpose(1, 2)
        x = self.conv(x).reshape(b * t, -1)
        return self.fc(x).reshape(b, t, -1)


class ExpressionEncoder(nn.Module):
    """(B, T, E) expression features of T neighbouring frames → (B, T, D) (τ_e)."""

    def __init__(self, in_dim: int, out_dim: int = 32, hidden: int = 64) -> None:
        super().__init__()
        self.channels = in_dim
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.02), nn.Linear(hidden, out_dim))

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-3))

    def forward(self, features: Tensor) -> Tensor:
        return self.net((features - self.mean) / self.std)


class TemporalAttention(nn.Module):
    """Weights the T per-frame features by learned attention and sums them (ER-NeRF's AudioAttNet): the
    smoothed feature of the centre frame."""

    def __init__(self, dim: int, context: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(dim, 16, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(16, 8, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(8, 4, 3, padding=1), nn.LeakyReLU(0.02),
            nn.Conv1d(4, 1, 3, padding=1),
        )  # fmt: skip
        self.weights = nn.Linear(context, context)

    def forward(self, x: Tensor) -> Tensor:
        scores = self.conv(x.transpose(1, 2))[:, 0]  # (B, T)
        attn = torch.softmax(self.weights(scores), dim=-1)
        return (attn[..., None] * x).sum(1)
