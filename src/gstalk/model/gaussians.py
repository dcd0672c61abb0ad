"""A set of 3D Gaussians bound to the face, with per-Gaussian learnable embeddings. Activations live here."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .binding import Binding, FacePose, frame_index, place


class ModelRegion(enum.IntEnum):
    """Which residual network refines a Gaussian (FG-3DGS's frequency split)."""

    FACE = 0  # low frequency: skin, brows, nose, cheeks — the gated MLP
    EYES = 1  # high frequency, driven by expression — cross-attention
    MOUTH = 2  # high frequency, driven by audio — cross-attention (lips; the interior has its own network)


#: the per-Gaussian parameters, in the order densification and checkpoints handle them
PER_GAUSSIAN = ("means", "quats", "log_scales", "opacity_logits", "color_logits", "embedding")
#: the per-Gaussian buffers, carried along by densification
PER_GAUSSIAN_BUFFERS = ("region", "binding", "parent")


@dataclass
class Splats:
    """Activated Gaussians in the head frame, ready for ``rasterize``."""

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    colors: Tensor

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return self.means, self.quats, self.scales, self.opacities, self.colors


class GaussianSet(nn.Module):
    """N Gaussians: means (N,3), quats (N,4, wxyz) and log-scales (N,3) in the frame each is bound to,
    opacity logits (N,), colour logits (N,3), embedding z (N,d); and buffers: region (the residual network
    that refines it), binding (:class:`Binding`) and parent (its triangle, for triangle bindings)."""

    def __init__(
        self,
        means: Tensor,
        colors: Tensor,
        scales: Tensor,
        region: Tensor,
        embedding_dim: int = 32,
        opacity: float = 0.1,
        binding: Tensor | None = None,
        parent: Tensor | None = None,
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
        skull = torch.full((n,), int(Binding.SKULL), dtype=torch.uint8)
        self.register_buffer("binding", skull if binding is None else binding.to(torch.uint8).clone())
        self.register_buffer("parent", torch.zeros(n, dtype=torch.int32) if parent is None else parent.int())

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    @property
    def means(self) -> Tensor:
        """Stored means, in each Gaussian's binding frame."""
        return self.params["means"]

    @property
    def embedding(self) -> Tensor:
        return self.params["embedding"]

    def frame_index(self) -> Tensor:
        return frame_index(self.binding, self.parent)

    def posed(self, pose: FacePose) -> tuple[Tensor, Tensor, Tensor]:
        """Head-frame means, quaternions and log-scales under ``pose``."""
        p = self.params
        return place(p["means"], p["quats"], p["log_scales"], self.frame_index(), pose)

    def splats(
        self,
        pose: FacePose,
        d_means: Tensor | None = None,
        d_log_scales: Tensor | None = None,
        d_quats: Tensor | None = None,
        d_color_logits: Tensor | None = None,
    ) -> Splats:
        """Activated Gaussians posed by ``pose``, plus optional residuals in the head frame."""
        p = self.params
        means, quats, log_scales = self.posed(pose)
        colors = p["color_logits"]
        return Splats(
            means=means if d_means is None else means + d_means,
            quats=quats if d_quats is None else quats + d_quats,
            scales=torch.exp(log_scales if d_log_scales is None else log_scales + d_log_scales),
            opacities=torch.sigmoid(p["opacity_logits"]),
            colors=torch.sigmoid(colors if d_color_logits is None else colors + d_color_logits),
        )

    def buffers_at(self, index: Tensor) -> dict[str, Tensor]:
        """The per-Gaussian buffers of rows ``index`` (to go with new tensors after densification)."""
        return {name: getattr(self, name)[index] for name in PER_GAUSSIAN_BUFFERS}

    def replace(self, tensors: dict[str, Tensor], buffers: dict[str, Tensor]) -> None:
        """Swap in new per-Gaussian tensors and buffers (after densification or pruning)."""
        for name in PER_GAUSSIAN:
            self.params[name] = nn.Parameter(tensors[name].detach().clone())
        for name in PER_GAUSSIAN_BUFFERS:
            setattr(self, name, buffers[name].clone())
