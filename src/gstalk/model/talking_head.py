"""The audio-driven talking head: two canonical Gaussian sets (head, mouth interior), the encoders of
position, audio and expression, and the region-decomposed deformation networks; plus the hair-preserving
portrait composite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..data.frames import Condition
from ..splat import Camera, RenderOutput, rasterize
from .conditions import AudioEncoder, ExpressionEncoder, TemporalAttention
from .deform import FaceDeformer, RegionDeformer
from .gaussians import GaussianSet, ModelRegion, Splats
from .hash_encoder import TriplaneHashEncoder


@dataclass
class Frame3D:
    """The deformed Gaussians of one frame."""

    head: Splats
    mouth: Splats


class TalkingHead(nn.Module):
    def __init__(
        self,
        head: GaussianSet,
        mouth: GaussianSet,
        bounds: Tensor,
        audio_window: int,
        audio_channels: int,
        expression_channels: int,
        config: ModelConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        self.head, self.mouth = head, mouth
        self.register_buffer("bounds", bounds.float().clone())  # (2, 3) box that normalises positions
        self.encoder = TriplaneHashEncoder(
            levels=config.hash_levels,
            log2_table=config.hash_log2_table,
            max_resolution=config.hash_max_resolution,
        )
        spatial = self.encoder.out_dim + config.embedding_dim
        self.audio_encoder = AudioEncoder(audio_channels, audio_window, config.audio_dim, config.hidden)
        self.audio_attention = TemporalAttention(config.audio_dim, config.context)
        self.expression_encoder = ExpressionEncoder(expression_channels, config.expression_dim, config.hidden)
        self.face = FaceDeformer(spatial, config.audio_dim, config.expression_dim, config.hidden)
        self.eyes = RegionDeformer(spatial, config.expression_dim, hidden=config.hidden)
        self.lips = RegionDeformer(spatial, config.audio_dim, hidden=config.hidden)

    # --- parameters by role (stages pick which ones they train) ---------------------------------
    def gaussian_parameters(self) -> list[nn.Parameter]:
        return [*self.head.params.values(), *self.mouth.params.values()]

    def color_parameters(self) -> list[nn.Parameter]:
        return [self.head.params["color_logits"], self.mouth.params["color_logits"]]

    def network_parameters(self) -> list[nn.Parameter]:
        gaussian = {id(p) for p in self.gaussian_parameters()}
        return [p for p in self.parameters() if id(p) not in gaussian]

    # --- forward ---------------------------------------------------------------------------------
    def spatial_features(self, gaussians: GaussianSet) -> Tensor:
        cache = getattr(self, "_spatial_cache", None)
        if cache is not None and not torch.is_grad_enabled():
            return cache[id(gaussians)]
        lo, hi = self.bounds[0], self.bounds[1]
        x = (gaussians.means - lo) / (hi - lo)
        return torch.cat([self.encoder(x), gaussians.embedding], dim=-1)  # H(μ) ⊕ z

    @torch.no_grad()
    def freeze(self) -> TalkingHead:
        """For rendering: cache what does not change from frame to frame (H(μ) ⊕ z of both sets, the
        region index lists). Call again after changing the Gaussians; training never uses the cache."""
        self._spatial_cache = None
        self._spatial_cache = {id(g): self.spatial_features(g) for g in (self.head, self.mouth)}
        return self

    def encode_condition(self, cond: Condition) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Audio tokens (T, A) and the smoothed current audio feature (A,); expression tokens and current."""
        audio_tokens = self.audio_encoder(cond.audio[None])  # (1, T, A)
        f_a = self.audio_attention(audio_tokens)[0]
        expr_tokens = self.expression_encoder(cond.expression[None])[0]
        return audio_tokens[0], f_a, expr_tokens, expr_tokens[self.config.context // 2]

    def forward(self, cond: Condition | None) -> Frame3D:
        """Deformed Gaussians for one frame; ``cond=None`` gives the canonical (static) head."""
        if cond is None:
            return Frame3D(self.head.splats(), self.mouth.splats())
        audio_tokens, f_a, expr_tokens, f_e = self.encode_condition(cond)
        region = self.head.region
        h = self.spatial_features(self.head)
        n = len(self.head)
        d_mu = h.new_zeros(n, 3)
        d_s = h.new_zeros(n, 3)
        d_q = h.new_zeros(n, 4)
        face = (region == ModelRegion.FACE).nonzero().squeeze(1)
        eyes = (region == ModelRegion.EYES).nonzero().squeeze(1)
        lips = (region == ModelRegion.MOUTH).nonzero().squeeze(1)
        if face.numel():
            mu, s, q = self.face(h.index_select(0, face), f_a, f_e)
            d_mu, d_s, d_q = (
                d_mu.index_copy(0, face, mu),
                d_s.index_copy(0, face, s),
                d_q.index_copy(0, face, q),
            )
        if eyes.numel():
            d_mu = d_mu.index_copy(0, eyes, self.eyes(h.index_select(0, eyes), expr_tokens, f_e))
        if lips.numel():
            d_mu = d_mu.index_copy(0, lips, self.lips(h.index_select(0, lips), audio_tokens, f_a))
        head = self.head.splats(d_mu, d_s, d_q)
        mouth = self.mouth.splats(self.lips(self.spatial_features(self.mouth), audio_tokens, f_a))
        return Frame3D(head, mouth)


@dataclass
class Composite:
    image: Tensor  # (H, W, 3)
    head: RenderOutput
    mouth: RenderOutput

    @property
    def head_alpha(self) -> Tensor:
        return self.head.alpha[0, ..., 0]

    @property
    def mouth_visible(self) -> Tensor:
        """Where the mouth interior shows through the face: (1 − α_face) · α_mouth."""
        return (1 - self.head.alpha[0, ..., 0]) * self.mouth.alpha[0, ..., 0]


def render_portrait(frame: Frame3D, camera: Camera, layer: Tensor, backend: str = "auto") -> Composite:
    """Hair-preserving portrait composite (DEGSTalk eq. 7, FG-3DGS eq. 14): the face over the mouth
    interior over ``layer``, the real hair, neck, torso and background pixels (H, W, 3)."""
    mouth = rasterize(*frame.mouth.tensors(), camera, background=layer, backend=backend)
    head = rasterize(*frame.head.tensors(), camera, background=mouth.image[0], backend=backend)
    return Composite(head.image[0], head, mouth)
