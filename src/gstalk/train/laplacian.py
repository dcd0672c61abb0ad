"""The detail loss (``losses.detail_loss``: the L1 of a two-level Laplacian pyramid of the error) compiled
for float32 CPU images, with its gradient written out.

For one level, with L the 4-neighbour Laplacian (valid part) and w the per-pixel weights,

    value = Σ_p w(p) |L e(p)|,        ∂value/∂e = Lᵀ (w · sign(L e)),

and Lᵀ is the same stencil applied to the zero-padded map (L is symmetric). The next level is the same on
the error averaged over 2 × 2 blocks, whose gradient spreads a quarter of each block's to its four
pixels. PyTorch's slicing ops and their autograd cost about ten times as much on a 512² head box
(``tests/test_train.py`` holds the two to 1e-5).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _level(e, w, c, scale, signs) -> float:
    """Σ w·|L e| over the valid interior of ``e`` (H, W·C) float32 (rows of C-channel pixels), times
    ``scale``; ``signs`` (H + 2, (W + 2)·C), zero on entry, gets ``scale · w · sign(L e)`` at (y + 1, j + C)
    for each interior (y, j): the map Lᵀ spreads back, with a ring of zeros. ``w``: (H, W·C) weights
    repeated per channel. The sum's order is free (reassociated); each term is exact."""
    h, n = e.shape
    total = np.float32(0.0)
    four = np.float32(4.0)
    for y in range(1, h - 1):
        row, up, down, wrow, out = e[y], e[y - 1], e[y + 1], w[y], signs[y + 1]
        part = np.float32(0.0)
        for j in range(c, n - c):
            lap = row[j - c] + row[j + c] + up[j] + down[j] - four * row[j]
            wy = wrow[j] * scale
            part += wy * abs(lap)
            out[j + c] = wy * (np.float32(lap > 0) - np.float32(lap < 0))
        total += part
    return total


@njit(cache=True, nogil=True, error_model="numpy")
def _spread(signs, c, out) -> None:
    """out (H, W·C) += Lᵀ of the sign map (see :func:`_level`: offset by one pixel, zero ring)."""
    h, n = out.shape
    four = np.float32(4.0)
    for y in range(h):
        above, mid, below, o = signs[y], signs[y + 1], signs[y + 2], out[y]
        for j in range(n):
            o[j] += mid[j] + mid[j + 2 * c] + above[j + c] + below[j + c] - four * mid[j + c]


@njit(cache=True, nogil=True, error_model="numpy")
def _half(e, c):
    """(H // 2, (W // 2)·C) float32 averages of (H, W·C) over 2 × 2 pixel blocks (an odd last row or
    column dropped), summed as PyTorch's ``0.25 * (a + b + c + d)`` of the four slices."""
    h, wd = e.shape[0] // 2, e.shape[1] // c // 2
    out = np.empty((h, wd * c), np.float32)
    quarter = np.float32(0.25)
    for y in range(h):
        top, bottom, o = e[2 * y], e[2 * y + 1], out[y]
        for x in range(wd):
            for k in range(c):
                j = 2 * x * c + k
                o[x * c + k] = quarter * (top[j] + bottom[j] + top[j + c] + bottom[j + c])
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _unhalf_add(g, c, out) -> None:
    """out[2y + a, 2x + b] += g[y, x] / 4 per channel: the gradient of :func:`_half`."""
    quarter = np.float32(0.25)
    for y in range(g.shape[0]):
        top, bottom, gy = out[2 * y], out[2 * y + 1], g[y]
        for x in range(g.shape[1] // c):
            for k in range(c):
                q = quarter * gy[x * c + k]
                j = 2 * x * c + k
                top[j] += q
                bottom[j] += q
                top[j + c] += q
                bottom[j + c] += q


def pyramid_l1(e: np.ndarray, w: np.ndarray | None, levels: int) -> tuple[float, np.ndarray]:
    """``losses.detail_loss``'s value for ``e`` (H, W, C) float32 and weights ``w`` (H, W) float32 (or
    None), and its gradient (H, W, C) float32."""
    h, wd, c = e.shape
    errors = [np.ascontiguousarray(e).reshape(h, wd * c)]
    weights = [np.ones((h, wd), np.float32) if w is None else np.ascontiguousarray(w, np.float32)]
    while len(errors) < levels and min(errors[-1].shape[0], errors[-1].shape[1] // c) >= 3:
        errors.append(_half(errors[-1], c))
        weights.append(_half(weights[-1], 1))
    total, grad = 0.0, None
    for k in range(len(errors) - 1, -1, -1):  # coarse to fine: each level's gradient spread to the next
        lh, ln = errors[k].shape
        level = np.zeros((lh, ln), np.float32)
        if min(lh, ln // c) >= 3:
            signs = np.zeros((lh + 2, ln + 2 * c), np.float32)
            per_channel = np.repeat(weights[k], c, axis=1)
            total += float(_level(errors[k], per_channel, c, np.float32(4**k / c), signs))
            _spread(signs, c, level)
        if grad is not None:
            _unhalf_add(grad, c, level)
        grad = level
    return total, grad.reshape(h, wd, c)


class _PyramidL1(torch.autograd.Function):
    @staticmethod
    def forward(ctx, e: Tensor, w: Tensor | None, levels: int) -> Tensor:
        weights = None if w is None else w.detach().numpy()
        value, grad = pyramid_l1(e.detach().numpy(), weights, levels)
        ctx.grad = torch.from_numpy(grad)
        return e.new_tensor(value)

    @staticmethod
    def backward(ctx, g: Tensor):
        return ctx.grad * g, None, None


def detail_loss_cpu(diff: Tensor, weight: Tensor | None = None, levels: int = 2) -> Tensor:
    """``losses.detail_loss`` of a float32 CPU error (H, W, C) (``weight`` (H, W) float32 or None), compiled;
    differentiable in ``diff``."""
    return _PyramidL1.apply(diff, None if weight is None else weight.float(), levels)


__all__ = ["detail_loss_cpu", "pyramid_l1"]
