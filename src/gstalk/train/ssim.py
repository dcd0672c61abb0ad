"""SSIM of two images, compiled for the CPU, with its gradient written out.

The definition is pytorch_msssim's ``ssim`` (Wang et al. 2004 as 3DGS uses it): an 11-tap Gaussian window
(σ = 1.5) applied separably as a *valid* convolution (no padding; columns and rows each lose 10), constants
C1 = (0.01 · L)², C2 = (0.03 · L)² for the data range L, and the mean of the SSIM map over channels and
positions. The five blurred maps (μx, μy, E[x²], E[y²], E[xy]) are float32 sums of 11 products per
pass, as the convolutions sum them; the mean is summed in float64.

Its gradient, per output position p with S = l · c, l = A / B, c = Cn / D (A = 2 μx μy + C1,
B = μx² + μy² + C1, Cn = 2 σxy + C2, D = σx² + σy² + C2):

    ∂S/∂μx = c (2 μy B − 2 μx A) / B² + l (2 μx Cn − 2 μy D) / D²
    ∂S/∂E[x²] = −l Cn / D²,   ∂S/∂E[xy] = 2 l / D

and since μx, E[x²] and E[xy] are blurs of x, x² and x·y,

    ∂SSIM/∂x(q) = (Gᵀ ∂S/∂μx)(q) + 2 x(q) (Gᵀ ∂S/∂E[x²])(q) + y(q) (Gᵀ ∂S/∂E[xy])(q)

over the mean's count, Gᵀ the transposed (full) blur. The forward pass keeps the three partial maps, so
the backward pass is three transposed blurs and the combination. On gstalk's threads, in bands of rows.
PyTorch's depthwise convolutions and autograd through some twenty full-size maps cost about ten times
as much on a CPU (``tests/test_train.py`` holds the two to 1e-6 in value and 1e-5 in gradient).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from numba import njit
from torch import Tensor

from ..splat.threads import for_each_part, threads

#: the window: 11 taps, σ = 1.5 (pytorch_msssim's default and 3DGS's)
WINDOW, SIGMA = 11, 1.5


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """pytorch_msssim's ``_fspecial_gauss_1d`` in float32: exp(−x² / 2σ²), x = −size//2 …, summed to 1."""
    coords = torch.arange(size, dtype=torch.float) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).numpy()


@njit(cache=True, nogil=True, error_model="numpy")  # no zero-division checks: SIMD
def _blur_rows(x, y, g, r0, r1, out) -> None:
    """Valid horizontal blurs of rows ``r0:r1`` of x, y, x², y², xy into ``out`` (5, r1 − r0, Wo)."""
    w, wo = x.shape[1], out.shape[2]
    src = np.empty((5, w), np.float32)
    for r in range(r0, r1):
        for j in range(w):
            a, b = x[r, j], y[r, j]
            src[0, j], src[1, j], src[2, j], src[3, j], src[4, j] = a, b, a * a, b * b, a * b
        for m in range(5):
            o, v = out[m, r - r0], src[m]
            o[:] = 0.0
            for k in range(g.shape[0]):
                gk = g[k]
                for j in range(wo):
                    o[j] += gk * v[j + k]


@njit(cache=True, nogil=True, error_model="numpy")  # no zero-division checks: SIMD
def ssim_rows(x, y, g, c1, c2, i0, i1, rows, partials) -> float:
    """Output rows ``i0:i1`` of one channel (x, y: (H, W) float32): the sum of the SSIM map there
    (float64), and ∂S/∂μx, ∂S/∂E[x²], ∂S/∂E[xy] into ``partials`` (3, Ho, Wo). ``rows``: scratch
    (5, i1 − i0 + len(g) − 1, Wo)."""
    taps = g.shape[0]
    _blur_rows(x, y, g, i0, i1 + taps - 1, rows)
    wo = rows.shape[2]
    m = np.empty((5, wo), np.float32)
    s_row = np.empty(wo, np.float32)
    two = np.float32(2.0)  # a float32 constant: an integer 2 would make the arithmetic float64
    total = 0.0
    for i in range(i0, i1):
        for n in range(5):
            mn = m[n]
            mn[:] = 0.0
            for k in range(taps):
                gk, h = g[k], rows[n, i - i0 + k]
                for j in range(wo):
                    mn[j] += gk * h[j]
        p0, p1, p2 = partials[0, i], partials[1, i], partials[2, i]
        for j in range(wo):
            mx, my = m[0, j], m[1, j]
            mxx, myy, mxy = mx * mx, my * my, mx * my
            a, b = two * mxy + c1, mxx + myy + c1
            cn, d = two * (m[4, j] - mxy) + c2, (m[2, j] - mxx) + (m[3, j] - myy) + c2
            lum, con = a / b, cn / d
            s_row[j] = lum * con
            d_lum = (two * my * b - two * mx * a) / (b * b)
            d_con = (two * mx * cn - two * my * d) / (d * d)
            p0[j] = con * d_lum + lum * d_con
            p1[j] = -lum * cn / (d * d)
            p2[j] = two * lum / d
        for j in range(wo):
            total += s_row[j]
    return total


@njit(cache=True, nogil=True, error_model="numpy")  # no zero-division checks: SIMD
def ssim_grad_rows(x, y, g, partials, scale, q0, q1, rows, grad) -> None:
    """Rows ``q0:q1`` of one channel's gradient: ``scale`` · (Gᵀp₀ + 2x Gᵀp₁ + y Gᵀp₂). ``rows``:
    scratch (3, q1 − q0 + len(g) − 1, W)."""
    taps = g.shape[0]
    ho, wo = partials.shape[1], partials.shape[2]
    p_lo, p_hi = max(q0 - taps + 1, 0), min(q1, ho)  # the partials' rows that reach rows q0:q1
    rows[:] = 0.0
    for i in range(p_lo, p_hi):  # transposed horizontal blur (a scatter)
        for m in range(3):
            pm, om = partials[m, i], rows[m, i - p_lo]
            for k in range(taps):
                gk, ok = g[k], om[k : k + wo]
                for j in range(wo):
                    ok[j] += gk * pm[j]
    w = grad.shape[1]
    t = np.empty((3, w), np.float32)
    two = np.float32(2.0)
    for q in range(q0, q1):  # transposed vertical blur, then the combination
        t[:] = 0.0
        for k in range(taps):
            i = q - k
            if i < p_lo or i >= p_hi:
                continue
            gk = g[k]
            for m in range(3):
                tm, h = t[m], rows[m, i - p_lo]
                for j in range(w):
                    tm[j] += gk * h[j]
        gq, xq, yq = grad[q], x[q], y[q]
        for j in range(w):
            gq[j] = scale * (t[0, j] + two * xq[j] * t[1, j] + yq[j] * t[2, j])


def _bands(n_channels: int, n_rows: int) -> list[tuple[int, int, int]]:
    """(channel, first row, last row + 1) parts: about four per worker in all, at least 16 rows each."""
    per_channel = max(1, min(-(-4 * threads() // n_channels), n_rows // 16))
    edges = np.linspace(0, n_rows, per_channel + 1).astype(int)
    return [(c, int(a), int(b)) for c in range(n_channels) for a, b in itertools.pairwise(edges) if b > a]


_WINDOW = gaussian_window()  # the taps every step uses


class _SSIM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, y, data_range):
        g = _WINDOW
        taps = g.shape[0]
        xs = np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
        ys = np.ascontiguousarray(y.detach().numpy(), dtype=np.float32)
        n_ch, h, w = xs.shape
        ho, wo = h - taps + 1, w - taps + 1
        c1, c2 = np.float32((0.01 * data_range) ** 2), np.float32((0.03 * data_range) ** 2)
        partials = np.empty((n_ch, 3, ho, wo), np.float32)
        parts = _bands(n_ch, ho)
        sums = np.zeros(len(parts))

        def run(k: int) -> None:
            c, i0, i1 = parts[k]
            rows = np.empty((5, i1 - i0 + taps - 1, wo), np.float32)
            sums[k] = ssim_rows(xs[c], ys[c], g, c1, c2, i0, i1, rows, partials[c])

        for_each_part(run, range(len(parts)))
        count = n_ch * ho * wo
        ctx.saved = (xs, ys, g, partials, count)
        return x.new_tensor(sums.sum() / count)

    @staticmethod
    def backward(ctx, grad_out):
        xs, ys, g, partials, count = ctx.saved
        taps = g.shape[0]
        n_ch, h, w = xs.shape
        grad = np.empty_like(xs)
        scale = np.float32(float(grad_out) / count)
        parts = _bands(n_ch, h)

        def run(k: int) -> None:
            c, q0, q1 = parts[k]
            rows = np.empty((3, q1 - q0 + taps - 1, w), np.float32)
            ssim_grad_rows(xs[c], ys[c], g, partials[c], scale, q0, q1, rows, grad[c])

        for_each_part(run, range(len(parts)))
        return torch.from_numpy(grad), None, None


def ssim_cpu(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean SSIM of (C, H, W) float32 CPU images ``x`` and ``y`` (H, W ≥ 11): pytorch_msssim's
    ``ssim(x[None], y[None], data_range, size_average=True)``, differentiable in ``x`` only (the target
    ``y`` takes no gradient). Raises ``ValueError`` for other shapes."""
    if x.ndim != 3 or x.shape != y.shape or min(x.shape[1:]) < WINDOW:
        raise ValueError(f"ssim_cpu needs (C, H, W) images of at least {WINDOW}², got {x.shape}, {y.shape}")
    return _SSIM.apply(x, y.detach(), data_range)
