"""A set of 3D Gaussians with per-Gaussian learnable embeddings and region ids. Activations live here."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import Tensor, nn


class ModelRegion(enum.IntEnum):
    """Which deformation network moves a Gaussian (FG-3DGS's frequency split)."""

    FACE = 0  # low frequency: skin, brows, nose, cheeks — the gated MLP
    EYES = 1  # high frequency, driven by expression — cross-attention
    MOUTH = 2  # high frequency, driven by audio — cross-attention (lips and mouth interior)


#: the per-Gaussian tensors, in the order densification and checkpoints handle them
PER_GAUSSIAN = ("means", "quats", "log_scales", "opacity_logits", "color_logits", "embedding")


@dataclass
class Splats:
    """Activated Gaussians ready for ``rasterize``."""

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return self.means, self.quats, self.scales, self.opacities, self.colors


class GaussianSet(nn.Module):
    """N Gaussians: means (N,3), quats (N,4, wxyz), log-scales (N,3), opacity logits (N,), colour logits
    (N,3), embedding z (N,d); and a region id (N,) buffer."""

    def __init__(
        self,
        means: Tensor,
        colors: Tensor,
        scales: Tensor,
        region: Tensor,
        embedding_dim: int = 32,
        opacity: float = 0.1,
    ) -> None:
        super().__init__()
        n = means.shape[0]
        if scales.ndim == 1:  # isotropic
            scales = scales[:, None].expand(n, 3)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1
        self.params = nn.ParameterDict(
            {
                "means": nn.Parameter(means.float().clone()),
                "quats": nn.Parameter(quats),
                "log_scales": nn.Parameter(torch.log(scales.float().clamp(min=1e-6))),
                "opacity_logits": nn.Parameter(torch.logit(torch.full((n,), opacity))),
                "color_logits": nn.Parameter(torch.logit(colors.float().clamp(0.02, 0.98))),
                "embedding": nn.Parameter(torch.randn(n, embedding_dim) * 0.1),
            }
        )
        self.register_buffer("region", region.to(torch.uint8).clone())

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def means(self) -> Tensor:
        return self.params["means"]

    @property
    def embedding(self) -> Tensor:
        return self.params["embedding"]

    def splats(
        self, d_means: Tensor | None = None, d_log_scales: Tensor | None = None, d_quats: Tensor | None = None
    ) -> Splats:
        """Activated Gaussians, optionally deformed: θ_D = θ_C + δ (DEGSTalk eq. 6)."""
        p = self.params
        means = p["means"] if d_means is None else p["means"] + d_means
        log_scales = p["log_scales"] if d_log_scales is None else p["log_scales"] + d_log_scales
        quats = p["quats"] if d_quats is None else p["quats"] + d_quats
        return Splats(
            means=means,
            quats=quats,
            scales=torch.exp(log_scales),
            opacities=torch.sigmoid(p["opacity_logits"]),
            colors=torch.sigmoid(p["color_logits"]),
        )

    def replace(self, tensors: dict[str, Tensor], region: Tensor) -> None:
        """Swap in new per-Gaussian tensors (after densification or pruning)."""
        for name in PER_GAUSSIAN:
            self.params[name] = nn.Parameter(tensors[name].detach().clone())
        self.region = region.to(torch.uint8).clone()
