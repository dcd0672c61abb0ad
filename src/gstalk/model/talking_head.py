"""The audio-driven talking head, and the hair-preserving portrait composite.

- Two Gaussian sets: the head, bound to the triangles of the tracked face mesh (or to the skull or the
  jaw where the mesh does not reach: ears, hairline, under the chin), and the mouth interior (upper teeth
  with the skull, lower teeth and tongue with the jaw, a dark back wall with the skull).
- :class:`Drive`: what moves one frame: a face mesh in the head frame (tracked in training, predicted
  from speech at render time), the audio and expression around the frame for the residual networks, and
  the lower face's code for the colour MLP.
- The audio → motion model (``speech.motion``) predicts the lower face's code from speech;
  :meth:`TalkingHead.compose_mesh` combines it with the upper face of a replayed frame.
- FG-3DGS's networks refine the mesh-driven motion as residuals: the spatially gated MLP for the face, the
  gated cross-attention for the eyes and lips, and the mouth interior with its own network. A colour MLP
  of the lower face's code (GaussianSpeech) shades teeth and creases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from ..data.frames import Condition
from ..face.mesh import N_MESH
from ..speech.motion import AudioMotion, LowerFaceBasis
from ..splat import Camera, RenderOutput, rasterize, resolve_backend
from .binding import FacePose, face_pose, triangle_frames
from .colour import ExpressionColour
from .conditions import AudioEncoder, ExpressionEncoder, TemporalAttention
from .deform import FaceDeformer, RegionDeformer
from .frozen import FrozenHead
from .gaussians import GaussianSet, ModelRegion, Splats
from .hash_encoder import TriplaneHashEncoder


@dataclass
class Drive:
    """What drives one frame."""

    mesh: Tensor | None = None
    """(N_MESH, 3) face mesh in the head frame; None: the canonical face."""
    condition: Condition | None = None
    """The audio and expression around the frame, for the residual networks; None: no residual."""
    code: Tensor | None = None
    """(K,) the lower face's standardised code (for the expression colour); None: the canonical's."""


@dataclass
class Frame3D:
    """The posed Gaussians of one frame."""

    head: Splats
    mouth: Splats
    residual: Tensor | None = None  # (N_head + N_mouth, 3) the residual networks' Δμ, for regularisation
    joined: tuple[tuple[Tensor, ...], Tensor] | None = None
    """Both sets in one: ``rasterize``'s five tensors, face Gaussians first, and the (N,) int32 groups
    (0 face, 1 mouth interior); the compiled path makes them so, and ``head`` and ``mouth`` are views."""

    def both(self) -> tuple[tuple[Tensor, ...], Tensor]:
        """Both sets in one (see ``joined``), concatenated unless they already are."""
        if self.joined is not None:
            return self.joined
        both = tuple(torch.cat([h, m]) for h, m in zip(self.head.tensors(), self.mouth.tensors()))
        n_head, n_mouth = len(self.head.means), len(self.mouth.means)
        groups = torch.cat([torch.zeros(n_head, dtype=torch.int32), torch.ones(n_mouth, dtype=torch.int32)])
        return both, groups.to(both[0].device)


class TalkingHead(nn.Module):
    def __init__(
        self,
        head: GaussianSet,
        mouth: GaussianSet,
        bounds: Tensor,
        canonical_mesh: Tensor,
        triangles: Tensor,
        basis: LowerFaceBasis,
        audio_window: int,
        audio_channels: int,
        expression_channels: int,
        config: ModelConfig | None = None,
        motion: nn.Module | None = None,
    ) -> None:
        """``motion``: the audio → motion model (a ``speech.person.PersonMotion`` that starts from the motion
        prior); None: an ``AudioMotion`` of ``config``'s sizes, learnt from the clip alone."""
        super().__init__()
        self.config = config = config or ModelConfig()
        self.head, self.mouth = head, mouth
        self.register_buffer("bounds", bounds.float().clone())  # (2, 3) box that normalises positions
        self.register_buffer("canonical_mesh", canonical_mesh[:N_MESH].float().clone())
        self.register_buffer("triangles", triangles.long().clone())
        _, _, sizes = triangle_frames(self.canonical_mesh, self.triangles)
        self.register_buffer("canonical_sizes", sizes.clamp(min=1e-6))
        self.basis = basis
        past, future = config.context_past, config.context_future
        if motion is None:
            motion = AudioMotion(audio_window, audio_channels, basis.components, past, future,
                                 config.motion_dim, config.motion_norm, config.motion_bands,
                                 config.motion_input_dropout)  # fmt: skip
        self.motion = motion
        self.encoder = TriplaneHashEncoder(
            levels=config.hash_levels,
            log2_table=config.hash_log2_table,
            max_resolution=config.hash_max_resolution,
        )
        spatial = self.encoder.out_dim + config.embedding_dim
        self.audio_encoder = AudioEncoder(audio_channels, audio_window, config.audio_dim, config.hidden)
        self.audio_attention = TemporalAttention(config.audio_dim, past + future + 1)
        self.expression_encoder = ExpressionEncoder(expression_channels, config.expression_dim, config.hidden)
        self.face = FaceDeformer(spatial, config.audio_dim, config.expression_dim, config.hidden)
        self.eyes = RegionDeformer(spatial, config.expression_dim, hidden=config.hidden)
        self.lips = RegionDeformer(spatial, config.audio_dim, hidden=config.hidden)
        self.interior = RegionDeformer(spatial, config.audio_dim, hidden=config.hidden)
        self.colour = ExpressionColour(config.embedding_dim, basis.components, config.hidden)
        self._cache: dict[str, object] | None = None

    # --- parameters by role (stages pick which ones they train) ---------------------------------
    def gaussian_parameters(self) -> list[nn.Parameter]:
        return [*self.head.params.values(), *self.mouth.params.values()]

    def color_parameters(self) -> list[nn.Parameter]:
        return [self.head.params["color_logits"], self.mouth.params["color_logits"]]

    def network_parameters(self) -> list[nn.Parameter]:
        """The residual and colour networks and their encoders (not the Gaussians, not the audio → motion
        model, which its own stage trains)."""
        skip = {id(p) for p in self.gaussian_parameters()} | {id(p) for p in self.motion.parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    # --- geometry ----------------------------------------------------------------------------------
    def pose(self, mesh: Tensor | None) -> FacePose:
        """Binding frames of ``mesh`` (the canonical face when None, or when the model is not
        mesh-driven)."""
        if not self.config.mesh_driven:
            mesh = None
        if mesh is None and self._cache is not None:
            return self._cache["canonical_pose"]
        m = self.canonical_mesh if mesh is None else mesh[:N_MESH].to(self.canonical_mesh)
        return face_pose(m, self.canonical_mesh, self.triangles, self.canonical_sizes)

    def compose_mesh(self, code: Tensor, source_mesh: Tensor) -> Tensor:
        """The face mesh of a frame: the lower face from ``code`` (K,), the upper face (blinks, brows) from
        ``source_mesh`` (N_MESH, 3), blended by the lower-face weights."""
        w = self.basis.weights[:, None]
        lower = self.basis.reconstruct(code)
        upper = source_mesh[:N_MESH].to(lower) - self.canonical_mesh
        return self.canonical_mesh + w * lower + (1 - w) * upper

    def canonical_means(self, gaussians: GaussianSet) -> Tensor:
        """Head-frame means of a set on the canonical face."""
        return gaussians.posed(self.pose(None))[0]

    def spatial_features(self, gaussians: GaussianSet, name: str) -> Tensor:
        """H(μ) ⊕ z: the tri-plane hash of the canonical position and the Gaussian's own embedding."""
        if self._cache is not None and not torch.is_grad_enabled():
            return self._cache[name]
        lo, hi = self.bounds[0], self.bounds[1]
        x = (self.canonical_means(gaussians).detach() - lo) / (hi - lo)
        return torch.cat([self.encoder(x), gaussians.embedding], dim=-1)

    @torch.no_grad()
    def freeze(self) -> TalkingHead:
        """For rendering: cache what does not change from frame to frame (the canonical pose, the spatial
        features of both sets, the region index lists, and for a CPU model without residual networks
        everything the compiled frame of ``model.frozen`` needs). Call again after changing the Gaussians
        or moving the model; training (or anything with gradients) never uses the cache."""
        self._cache = None
        cache: dict[str, object] = {"canonical_pose": self.pose(None)}
        cache["head"] = self.spatial_features(self.head, "head")
        cache["mouth"] = self.spatial_features(self.mouth, "mouth")
        cache["colour_head"] = self.colour.latent_part(self.head.embedding)
        cache["colour_mouth"] = self.colour.latent_part(self.mouth.embedding)
        for region in ModelRegion:
            cache[f"index_{region.name}"] = (self.head.region == region).nonzero().squeeze(1)
        cache["compiled"] = FrozenHead(self) if FrozenHead.supports(self) else None
        self._cache = cache
        return self

    def _regions(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._cache is not None:
            return tuple(self._cache[f"index_{r.name}"] for r in ModelRegion)  # type: ignore[return-value]
        return tuple((self.head.region == r).nonzero().squeeze(1) for r in ModelRegion)  # type: ignore[return-value]

    # --- forward ---------------------------------------------------------------------------------
    def encode_condition(self, cond: Condition) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Audio tokens (T, A) and the smoothed current audio feature (A,); expression tokens and current."""
        audio_tokens = self.audio_encoder(cond.audio[None])  # (1, T, A)
        f_a = self.audio_attention(audio_tokens)[0]
        expr_tokens = self.expression_encoder(cond.expression[None])[0]
        return audio_tokens[0], f_a, expr_tokens, expr_tokens[self.config.context_past]

    def forward(self, drive: Drive | None = None) -> Frame3D:
        """The posed Gaussians of one frame (``None``: the canonical face, no residual)."""
        drive = drive or Drive()
        compiled = self._cache["compiled"] if self._cache is not None else None
        if compiled is not None and not torch.is_grad_enabled():
            return self._compiled_forward(compiled, drive)
        pose = self.pose(drive.mesh)
        code = drive.code if drive.code is not None else torch.zeros_like(self.basis.basis[:, 0, 0])
        head_colour = mouth_colour = None
        if self.config.expression_colour:
            cached = self._cache if self._cache is not None and not torch.is_grad_enabled() else {}
            head_colour = self.colour(self.head.embedding, code, cached.get("colour_head"))
            mouth_colour = self.colour(self.mouth.embedding, code, cached.get("colour_mouth"))
        if drive.condition is None or not self.config.residual:
            return Frame3D(
                self.head.splats(pose, d_color_logits=head_colour),
                self.mouth.splats(pose, d_color_logits=mouth_colour),
            )
        audio_tokens, f_a, expr_tokens, f_e = self.encode_condition(drive.condition)
        h = self.spatial_features(self.head, "head")
        n = len(self.head)
        d_mu, d_s, d_q = h.new_zeros(n, 3), h.new_zeros(n, 3), h.new_zeros(n, 4)
        face, eyes, lips = self._regions()
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
        d_interior = self.interior(self.spatial_features(self.mouth, "mouth"), audio_tokens, f_a)
        return Frame3D(
            self.head.splats(pose, d_mu, d_s, d_q, head_colour),
            self.mouth.splats(pose, d_interior, d_color_logits=mouth_colour),
            residual=torch.cat([d_mu, d_interior]),
        )

    def _compiled_forward(self, compiled: FrozenHead, drive: Drive) -> Frame3D:
        """The frozen model's frame in one compiled pass (``model.frozen``); the residual networks are
        off in every model that gets here."""
        (means, quats, scales, opacities, colors), groups = compiled.splats(drive.mesh, drive.code)
        n = compiled.n_head
        head = Splats(means[:n], quats[:n], scales[:n], opacities[:n], colors[:n])
        mouth = Splats(means[n:], quats[n:], scales[n:], opacities[n:], colors[n:])
        return Frame3D(head, mouth, joined=((means, quats, scales, opacities, colors), groups))


@dataclass
class Composite:
    """A rendered portrait: the image and its total alpha; in training, each set's own render too."""

    image: Tensor  # (H, W, 3)
    alpha: Tensor  # (H, W): 1 − the transmittance left after the face and the mouth interior
    head: RenderOutput | None = None  # two-pass (training) only
    mouth: RenderOutput | None = None

    @property
    def head_alpha(self) -> Tensor:
        return self.head.alpha[0, ..., 0]

    @property
    def mouth_visible(self) -> Tensor:
        """Where the mouth interior shows through the face: (1 − α_face) · α_mouth."""
        return (1 - self.head.alpha[0, ..., 0]) * self.mouth.alpha[0, ..., 0]


def render_portrait(
    frame: Frame3D,
    camera: Camera,
    layer: Tensor,
    backend: str = "auto",
    fused: bool | None = None,
    stats: bool = False,
) -> Composite:
    """Hair-preserving portrait composite (DEGSTalk eq. 7, FG-3DGS eq. 14): the face over the mouth
    interior over ``layer``, the real hair, neck, torso and background pixels (H, W, 3).

    Training renders the two sets in two passes (their separate alphas feed the losses). Rendering
    (``fused``, the default without gradients) makes one pass in which every face Gaussian comes before
    any mouth Gaussian, so where the face is opaque the interior costs nothing. It matches the two passes
    except in the rare pixels where the early stop (T < 1e-4) falls differently: there by under 1%.
    ``stats``: in the two passes, ask each for densification's statistics (``rasterize(stats=...)``,
    in ``head.stats`` and ``mouth.stats`` after ``backward()``)."""
    chosen = resolve_backend(backend, frame.head.means.device)
    if fused is None:
        fused = not torch.is_grad_enabled() and chosen != "gsplat"
    if fused:
        both, groups = frame.both()
        out = rasterize(*both, camera, background=layer, backend=chosen, groups=groups, depth=False)
        return Composite(out.image[0], out.alpha[0, ..., 0])
    mouth = rasterize(*frame.mouth.tensors(), camera, background=layer, backend=chosen,
                      stats={} if stats else None)  # fmt: skip
    head = rasterize(*frame.head.tensors(), camera, background=mouth.image[0], backend=chosen,
                     stats={} if stats else None)  # fmt: skip
    alpha = 1 - (1 - head.alpha[0, ..., 0]) * (1 - mouth.alpha[0, ..., 0])
    return Composite(head.image[0], alpha, head, mouth)
