"""Training losses: L1, D-SSIM, LPIPS (when its weights are given), and the mouth-interior mask loss."""

from __future__ import annotations

import torch
from pytorch_msssim import ssim
from torch import Tensor


def l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def dssim(pred: Tensor, target: Tensor) -> Tensor:
    """1 − SSIM over (H, W, 3) images in [0, 1] (11-px Gaussian window, σ = 1.5)."""
    p = pred.permute(2, 0, 1)[None]
    t = target.permute(2, 0, 1)[None]
    return 1.0 - ssim(p, t, data_range=1.0, size_average=True)


def masked(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """``pred`` inside ``mask`` (H, W), the target elsewhere: losses then only see the masked regions."""
    return torch.where(mask[..., None], pred, target)


def mouth_mask_loss(mouth_visible: Tensor, interior: Tensor, region: Tensor) -> Tensor:
    """Per pixel, where the mouth interior shows through the face ((1 − α_face) α_mouth) against the frame's
    mouth-interior mask, averaged over the dilated lip and mouth region: it tells each lip Gaussian where
    the opening is, rather than only how large it is. Plays the papers' jaw loss role."""
    n = region.float().sum().clamp(min=1.0)
    return ((mouth_visible - interior.float()).abs() * region).sum() / n


def psnr(pred: Tensor, target: Tensor) -> float:
    mse = float(((pred - target) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()
