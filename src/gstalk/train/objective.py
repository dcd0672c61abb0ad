"""The objective of a render stage: the named loss terms of one rendered frame against its target.

As nerfstudio's ``get_loss_dict``: :func:`loss_terms` returns every term by name, unweighted;
:func:`total_loss` weighs them by the stage's config and sums them; the trainer logs the terms. Terms:

- ``l1``: L1 against the frame, the lips and mouth interior weighted ``1 + mouth_region_weight``;
- ``dssim``: 1 − SSIM;
- ``detail``: the L1 of a Laplacian pyramid of the error (``losses.detail_loss``), ``DETAIL_REGIONS``
  (the eyes and brows of FG-3DGS's high-frequency split) weighted ``1 + detail_region_weight``;
  ``mouth_detail``: the same inside the mouth's mask alone, averaged there;
- ``stray`` (masked stages): opacity where it does not belong: the render's (face and mouth interior)
  where the frame shows hair, neck, torso or background, and the mouth interior's own outside the
  mouth's mask (dilated by ``MOUTH_ROOM`` of the image). Behind the face the mouth interior is hidden, so
  nothing else keeps its Gaussians from drifting out to cover an ear or a collar, or from settling under
  the chin, where the lips' edge lets them show;
- ``coverage`` (masked stages): the transparency of the render over the frame's head regions where the
  layer under the render holds the background plate (not the frame's own pixels): any of it shows as a
  seam (along the jaw, the cheeks);
- ``mouth``: the per-pixel mouth-interior mask loss (the papers' jaw-loss role, ``losses.mouth_mask_loss``);
- ``residual``: the residual networks' mean squared Δμ (mm²);
- ``lpips``: when LPIPS weights are given.

Masked stages (static, motion) compute L1 and D-SSIM over the dilated head regions only, averaged over
those pixels rather than diluted by the rest of the frame.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import StageConfig
from ..data.frames import Target
from ..model.talking_head import Composite, Frame3D
from ..regions import HEAD_REGIONS, Region
from .losses import SSIM_RADIUS, detail_loss, dssim, mask_box, masked, mouth_mask_loss

#: where the detail loss weighs more: FG-3DGS's high-frequency regions driven by the frame (its eyes) and
#: the brows. Its other one, the mouth, follows the speech: a sharper mouth where the predicted motion is
#: off scores worse (docs/benchmarks.md), so the mouth gets the face's weight.
DETAIL_REGIONS = (Region.BROWS, Region.EYES)
#: room the mouth interior has around the mouth's mask, as a share of the image's side (``mouth_stray``)
MOUTH_ROOM = 0.01
#: the detail loss's box margin: its two-level pyramid's support (a Laplacian of 2 × 2 blocks) fits in it
DETAIL_MARGIN = 6


def window_share(full: torch.Size, crop: torch.Size) -> float:
    """Share of the whole image's SSIM windows that lie in the crop (SSIM maps are valid convolutions)."""
    side = 2 * SSIM_RADIUS
    return (crop[0] - side) * (crop[1] - side) / ((full[0] - side) * (full[1] - side))


def image_terms(stage: StageConfig, comp: Composite, target: Target) -> dict[str, Tensor]:
    """``l1``, ``dssim`` and (masked stages) ``stray`` of a composite against its target (H, W, 3)."""
    if not stage.masked:
        weight = 1.0 + stage.mouth_region_weight * target.mouth_mask.float()[..., None]
        terms = {
            "l1": (weight * (comp.image - target.image).abs()).mean(),
            "dssim": dssim(comp.image, target.image),
        }
        if stage.detail_weight > 0:
            diff = comp.image - target.image
            terms["detail"] = detail_loss(diff, _detail_weight(stage, target.labels)) / target.labels.numel()
        return terms
    inside = target.head_mask
    share = inside.float().mean().clamp(min=1e-3)
    # outside the mask the prediction is the target: both terms are computed on the mask's box (plus twice
    # the SSIM window's radius), with the whole image's normalisation
    crop = mask_box(inside, margin=2 * SSIM_RADIUS)
    image, reference = comp.image[crop], target.image[crop]
    pred = masked(image, reference, inside[crop])
    weight = 1.0 + stage.mouth_region_weight * target.mouth_mask[crop].float()[..., None]
    diff = weight * (pred - reference).abs()
    terms = {
        "l1": diff.sum() / (diff.shape[-1] * inside.numel()) / share,
        "dssim": dssim(pred, reference) * window_share(inside.shape, pred.shape) / share,
        "stray": comp.alpha.masked_fill(inside, 0.0).mean() / (1 - share).clamp(min=1e-3)
        + mouth_stray(comp, target),
    }
    if stage.coverage_weight > 0:  # where the layer under the head is not the frame's own pixel
        plate = torch.isin(target.labels[crop], torch.tensor(HEAD_REGIONS, device=inside.device))
        plate &= (target.layer[crop] != target.image[crop]).any(-1)
        terms["coverage"] = (1 - comp.alpha[crop]).masked_fill(~plate, 0.0).sum() / plate.sum().clamp(min=1)
    if stage.detail_weight > 0:
        weight = _detail_weight(stage, target.labels)
        terms["detail"] = masked_detail(comp.image, target.image, inside, weight) / inside.numel() / share
    return terms


def masked_detail(image: Tensor, reference: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
    """``losses.detail_loss`` of ``image`` against ``reference`` (H, W, 3) where ``mask`` (H, W) holds
    (the image is taken as the reference elsewhere), computed on the mask's box: a margin of 6 pixels
    and an even first row and column, so the box's pyramid is the whole image's (2 × 2 blocks aligned,
    the Laplacian's support inside) and the value and gradient are the whole image's."""
    rows, cols = mask_box(mask, margin=DETAIL_MARGIN)
    box = slice(rows.start // 2 * 2, rows.stop), slice(cols.start // 2 * 2, cols.stop)
    pred = masked(image[box], reference[box], mask[box])
    return detail_loss(pred - reference[box], None if weight is None else weight[box])


def mouth_stray(comp: Composite, target: Target) -> Tensor:
    """The mouth interior's own alpha (rendered alone) outside the mouth's mask (lips and interior)
    dilated by ``MOUTH_ROOM`` of the image's side, averaged over those pixels (0 when the frame has no
    mouth label): its Gaussians belong behind the lips, not under the chin or the cheeks, where any face
    Gaussian short of opaque would let them show."""
    alpha = comp.mouth.alpha[0, ..., 0]
    mouth = target.mouth_mask
    if not bool(mouth.any()):
        return alpha.new_zeros(())
    room = max(1, round(MOUTH_ROOM * alpha.shape[0]))
    box = mask_box(mouth, margin=room)
    near = torch.nn.functional.max_pool2d(mouth[box].float()[None, None], 2 * room + 1, 1, room)[0, 0] > 0
    outside = alpha.numel() - int(near.sum())
    return (alpha.sum() - alpha[box][near].sum()) / max(outside, 1)


def _detail_weight(stage: StageConfig, labels: Tensor) -> Tensor | None:
    """Per pixel, 1 + ``detail_region_weight`` in FG-3DGS's high-frequency regions, else 1."""
    if stage.detail_region_weight == 0:
        return None
    regions = torch.tensor(DETAIL_REGIONS, device=labels.device)
    return 1.0 + stage.detail_region_weight * torch.isin(labels, regions).float()


def mouth_detail(comp: Composite, target: Target) -> Tensor:
    """The detail loss inside the mouth mask (lips and mouth interior, dilated), averaged over its pixels:
    the mouth crop's detail, whatever share of the frame it is."""
    mouth = target.mouth_mask
    return masked_detail(comp.image, target.image, mouth) / mouth.sum().clamp(min=1)


def loss_terms(
    stage: StageConfig, comp: Composite, frame: Frame3D, target: Target, lpips=None
) -> dict[str, Tensor]:
    """Every loss term the stage asks for, by name, unweighted (scalars on the composite's device)."""
    terms = image_terms(stage, comp, target)
    if stage.mouth_detail_weight > 0 and bool(target.mouth_mask.any()):
        terms["mouth_detail"] = mouth_detail(comp, target)
    if stage.mouth_weight > 0:  # on the mouth region's box: the loss is zero outside it
        box = mask_box(target.mouth_mask, margin=0)
        visible = (1 - comp.head.alpha[0, ..., 0][box]) * comp.mouth.alpha[0, ..., 0][box]
        interior = target.labels[box] == Region.MOUTH_INTERIOR
        terms["mouth"] = mouth_mask_loss(visible, interior, target.mouth_mask[box])
    if stage.residual_weight > 0 and frame.residual is not None:
        terms["residual"] = (frame.residual * 1000).pow(2).sum(-1).mean()  # mm²
    if stage.lpips_weight > 0 and lpips is not None:
        terms["lpips"] = lpips(comp.image, target.image)
    return terms


def total_loss(stage: StageConfig, terms: dict[str, Tensor]) -> Tensor:
    """The stage's weighted sum of ``terms`` (L1 at weight 1)."""
    weights = {"l1": 1.0, "stray": stage.stray_weight, "dssim": stage.dssim_weight,
               "coverage": stage.coverage_weight, "mouth": stage.mouth_weight,
               "residual": stage.residual_weight, "lpips": stage.lpips_weight, "detail": stage.detail_weight,
               "mouth_detail": stage.mouth_detail_weight}  # fmt: skip
    return sum(weights[name] * value for name, value in terms.items())


__all__ = [
    "DETAIL_REGIONS", "MOUTH_ROOM", "image_terms", "loss_terms", "masked_detail", "mouth_detail",
    "mouth_stray", "total_loss", "window_share",
]  # fmt: skip
