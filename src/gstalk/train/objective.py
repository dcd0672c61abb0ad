"""The objective of a render stage: the named loss terms of one rendered frame against its target.

As nerfstudio's ``get_loss_dict``: :func:`loss_terms` returns every term by name, unweighted;
:func:`total_loss` weighs them by the stage's config and sums them; the trainer logs the terms. Terms:

- ``l1``: L1 against the frame, the lips and mouth interior weighted ``1 + mouth_region_weight``;
- ``dssim``: 1 − SSIM;
- ``stray`` (masked stages): head opacity where the frame shows hair, neck, torso or background;
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
from ..regions import Region
from .losses import SSIM_RADIUS, dssim, mask_box, masked, mouth_mask_loss


def window_share(full: torch.Size, crop: torch.Size) -> float:
    """Share of the whole image's SSIM windows that lie in the crop (SSIM maps are valid convolutions)."""
    side = 2 * SSIM_RADIUS
    return (crop[0] - side) * (crop[1] - side) / ((full[0] - side) * (full[1] - side))


def image_terms(stage: StageConfig, comp: Composite, target: Target) -> dict[str, Tensor]:
    """``l1``, ``dssim`` and (masked stages) ``stray`` of a composite against its target (H, W, 3)."""
    if not stage.masked:
        weight = 1.0 + stage.mouth_region_weight * target.mouth_mask.float()[..., None]
        return {
            "l1": (weight * (comp.image - target.image).abs()).mean(),
            "dssim": dssim(comp.image, target.image),
        }
    inside = target.head_mask
    share = inside.float().mean().clamp(min=1e-3)
    # outside the mask the prediction is the target: both terms are computed on the mask's box (plus twice
    # the SSIM window's radius), with the whole image's normalisation
    crop = mask_box(inside, margin=2 * SSIM_RADIUS)
    image, reference = comp.image[crop], target.image[crop]
    pred = masked(image, reference, inside[crop])
    weight = 1.0 + stage.mouth_region_weight * target.mouth_mask[crop].float()[..., None]
    diff = weight * (pred - reference).abs()
    return {
        "l1": diff.sum() / (diff.shape[-1] * inside.numel()) / share,
        "dssim": dssim(pred, reference) * window_share(inside.shape, pred.shape) / share,
        "stray": comp.head_alpha.masked_fill(inside, 0.0).mean() / (1 - share).clamp(min=1e-3),
    }


def loss_terms(
    stage: StageConfig, comp: Composite, frame: Frame3D, target: Target, lpips=None
) -> dict[str, Tensor]:
    """Every loss term the stage asks for, by name, unweighted (scalars on the composite's device)."""
    terms = image_terms(stage, comp, target)
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
    """The stage's weighted sum of ``terms`` (L1 and the stray-opacity term at weight 1)."""
    weights = {"l1": 1.0, "stray": 1.0, "dssim": stage.dssim_weight, "mouth": stage.mouth_weight,
               "residual": stage.residual_weight, "lpips": stage.lpips_weight}  # fmt: skip
    return sum(weights[name] * value for name, value in terms.items())


__all__ = ["image_terms", "loss_terms", "total_loss", "window_share"]
