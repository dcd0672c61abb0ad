"""Training losses: L1, D-SSIM, the detail loss (a Laplacian pyramid's L1), LPIPS (when its weights are
given), and the mouth-interior mask loss."""

from __future__ import annotations

import torch
from pytorch_msssim import ssim
from torch import Tensor

from .ssim import WINDOW, ssim_cpu

#: radius of the D-SSIM window (11 pixels, σ = 1.5)
SSIM_RADIUS = 5


def mask_box(mask: Tensor, margin: int) -> tuple[slice, slice]:
    """The rows and columns of ``mask``'s bounding box, widened by ``margin`` and kept at least
    2 · margin + 1 pixels on a side (so an SSIM window fits); the whole image when the mask is empty."""
    h, w = mask.shape
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    if rows.numel() == 0:
        return slice(0, h), slice(0, w)

    def span(idx: Tensor, size: int) -> slice:
        lo, hi = max(int(idx[0]) - margin, 0), min(int(idx[-1]) + margin + 1, size)
        grow = max(0, 2 * margin + 1 - (hi - lo))
        lo, hi = max(lo - grow, 0), min(hi + grow, size)
        return slice(lo, hi)

    return span(rows[:, 0], h), span(cols[:, 0], w)


def l1(pred: Tensor, target: Tensor) -> Tensor:
    return (pred - target).abs().mean()


def dssim(pred: Tensor, target: Tensor) -> Tensor:
    """1 − SSIM over (H, W, 3) images in [0, 1] (11-px Gaussian window, σ = 1.5), differentiable in
    ``pred``: pytorch_msssim's ``ssim``, compiled with its gradient written out for float32 CPU images
    (``train.ssim``), pytorch_msssim itself elsewhere."""
    p, t = pred.permute(2, 0, 1), target.permute(2, 0, 1)
    if p.device.type == "cpu" and p.dtype == torch.float32 and min(p.shape[1:]) >= WINDOW:
        return 1.0 - ssim_cpu(p, t.float())
    return 1.0 - ssim(p[None], t[None], data_range=1.0, size_average=True)


def laplacian(x: Tensor) -> Tensor:
    """The 4-neighbour Laplacian of an (H, W, C) image, valid part only: (H − 2, W − 2, C)."""
    return x[1:-1, :-2] + x[1:-1, 2:] + x[:-2, 1:-1] + x[2:, 1:-1] - 4 * x[1:-1, 1:-1]


def _half(x: Tensor) -> Tensor:
    """(H, W, ...) averaged over 2 × 2 blocks: (H // 2, W // 2, ...), an odd last row or column dropped."""
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def detail_loss(diff: Tensor, weight: Tensor | None = None, levels: int = 2) -> Tensor:
    """The L1 of a Laplacian pyramid of the error: weight-free, it looks only at the detail an image has
    (edges, creases, pores, eyelashes), which L1 and D-SSIM on pixels let a blurred render get away with.

    ``diff``: (H, W, C) prediction minus target. Level k is the Laplacian of the error averaged over
    2^k × 2^k blocks (level 0: structures of 1–2 px, level 1: 2–4 px). ``weight``: optional (H, W) weights
    per pixel, averaged likewise. Returns the sum over levels of Σ w·|L_k| / 4^-k, i.e. every level in
    units of full-resolution pixels (divide by the pixel count for a mean). Float32 CPU errors take the
    compiled version (``train.laplacian``), the rest PyTorch's."""
    if diff.device.type == "cpu" and diff.dtype == torch.float32 and diff.is_contiguous():
        from .laplacian import detail_loss_cpu

        return detail_loss_cpu(diff, weight, levels)
    return pyramid_l1(diff, weight, levels)


def pyramid_l1(diff: Tensor, weight: Tensor | None = None, levels: int = 2) -> Tensor:
    """:func:`detail_loss` in PyTorch operations (any device and dtype; the compiled one's reference)."""
    total = diff.sum() * 0  # zero, in the graph even when the image is too small for any level
    for k in range(levels):
        if min(diff.shape[:2]) < 3:
            break
        lap = laplacian(diff).abs()
        w = None if weight is None else weight[1:-1, 1:-1, None]
        total = total + (lap if w is None else lap * w).sum() * 4**k / diff.shape[-1]
        if k + 1 < levels:
            diff = _half(diff)
            weight = None if weight is None else _half(weight)
    return total


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
