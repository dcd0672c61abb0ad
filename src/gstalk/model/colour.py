"""Expression-dependent colour (GaussianSpeech): a small MLP of the face's expression code and each
Gaussian's own latent gives a colour residual, so that teeth appear and creases darken as the mouth
opens rather than being baked into one colour per Gaussian."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .deform import mlp


class ExpressionColour(nn.Module):
    """(N, d) per-Gaussian latents and a (K,) expression code → (N, 3) colour-logit residuals."""

    def __init__(self, latent_dim: int, code_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.code_dim = code_dim
        self.net = mlp(latent_dim + code_dim, hidden, 3, layers=2)
        nn.init.zeros_(self.net[-1].weight)  # start from the base colours
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, latents: Tensor, code: Tensor, latent_part: Tensor | None = None) -> Tensor:
        """``latent_part``: the first layer applied to ``latents`` alone (bias included), cached by
        :meth:`latent_part` when the latents do not change from frame to frame."""
        if latent_part is None:
            return self.net(torch.cat([latents, code.expand(latents.shape[0], -1)], -1))
        first = self.net[0]
        hidden = latent_part + code @ first.weight[:, latents.shape[1] :].T
        return self.net[2:](self.net[1](hidden))

    def latent_part(self, latents: Tensor) -> Tensor:
        first = self.net[0]
        return latents @ first.weight[:, : latents.shape[1]].T + first.bias
