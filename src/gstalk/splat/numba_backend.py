"""Compiled CPU backend of ``rasterize()``: tile-binned front-to-back compositing in numba, with backward.

The design of the reference 3DGS rasterizer and gsplat, on CPU threads:

1. **Binning** (serial, O(N + pairs of Gaussian and tile)): every visible Gaussian's opacity-aware pixel
   box, the same box the torch backend pairs pixels with, covers a range of 16 × 16 tiles. Gaussians are
   visited in stable depth order and appended to each tile they touch, so every tile's list comes out
   sorted front to back with no per-tile sort.
2. **Forward** (tiles in parallel, ``prange``): a tile walks its list front to back, and each Gaussian
   updates only the pixels of its box that its ellipse can reach (per row, the span where
   ``σ ≤ log(o · 255)``, a pixel wider on each side), with the torch backend's rules:
   ``alpha = min(0.99, o·exp(-σ))``, skip ``alpha < 1/255``, and a pixel stops before the Gaussian that
   would take its transmittance below 1e-4. The per-pair quantities that decide those rules (σ, alpha)
   are computed in the input's precision with the torch backend's operation order; transmittance and
   sums are float64.
3. **Backward** (tiles in parallel): a first walk sums, per pixel, ``S = Σ w_k (g · v_k)`` (w the pair's
   weight, v its values 1, depth, colour; g the output gradient); a second walk gives each pair's
   gradient, the contribution behind pair k being ``S`` minus the pixel's running prefix: no division by
   ``1 - alpha``. Each (tile, Gaussian) entry sums its own gradient, so tiles never share memory, and a
   serial pass sums the entries per Gaussian.

Only the compositing is compiled: projection stays the shared PyTorch code, so its gradients (to means,
rotations, scales, cameras) come from autograd exactly as for the torch backend.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from .projection import ALPHA_MIN, Projected
from .torch_backend import ALPHA_MAX, T_STOP, pixel_boxes

TILE = 16


@njit(cache=True, nogil=True)
def _bin(boxes: np.ndarray, order: np.ndarray, width: int, height: int, tile: int):
    """Per-tile lists of Gaussian ids, front to back. ``boxes`` (N, 4): first col, last col, first row,
    last row of the pixels a Gaussian covers (empty when last < first); ``order``: ids by depth."""
    tiles_x = (width + tile - 1) // tile
    tiles_y = (height + tile - 1) // tile
    start = np.zeros(tiles_x * tiles_y + 1, np.int64)
    for g in range(boxes.shape[0]):
        x0, x1, y0, y1 = boxes[g, 0], boxes[g, 1], boxes[g, 2], boxes[g, 3]
        if x1 < x0 or y1 < y0:
            continue
        for ty in range(y0 // tile, y1 // tile + 1):
            for tx in range(x0 // tile, x1 // tile + 1):
                start[ty * tiles_x + tx + 1] += 1
    for t in range(tiles_x * tiles_y):
        start[t + 1] += start[t]
    fill = start[:-1].copy()
    ids = np.empty(start[-1], np.int32)
    for k in range(order.shape[0]):
        g = order[k]
        x0, x1, y0, y1 = boxes[g, 0], boxes[g, 1], boxes[g, 2], boxes[g, 3]
        if x1 < x0 or y1 < y0:
            continue
        for ty in range(y0 // tile, y1 // tile + 1):
            for tx in range(x0 // tile, x1 // tile + 1):
                t = ty * tiles_x + tx
                ids[fill[t]] = g
                fill[t] += 1
    return start, ids


@njit(cache=True, nogil=True, inline="always")
def _row_span(mx, my, a, b, c, sigma_max, py_centre, x0, x1):
    """Columns of one row where the ellipse σ(dx, dy) ≤ sigma_max can lie, widened by a pixel on each side
    (the exact alpha test decides), clipped to [x0, x1]. Empty when the first returned exceeds the last."""
    dy = py_centre - my
    disc = (b * b - a * c) * dy * dy + 2.0 * a * sigma_max
    if disc < 0.0:
        return x0, x0 - 1
    root = np.sqrt(disc)
    lo = mx - 0.5 + (-b * dy - root) / a
    hi = mx - 0.5 + (-b * dy + root) / a
    return max(x0, int(np.floor(lo)) - 1), min(x1, int(np.ceil(hi)) + 1)


@njit(cache=True, parallel=True, nogil=True)
def _forward(start, ids, boxes, xs, ys, means2d, conics, opacities, depths, colors, consts, tile,
             out_color, out_alpha, out_depth):  # fmt: skip
    """Composite every pixel; outputs are (H, W, D), (H, W), (H, W) and start zeroed.

    Within a tile, Gaussians are visited front to back and each updates the pixels of its box that its
    ellipse can reach; a pixel whose transmittance would fall below 1e-4 is done for all later ones."""
    height, width = out_alpha.shape
    tiles_x = (width + tile - 1) // tile
    n_tiles = start.shape[0] - 1
    d = colors.shape[1]
    half, alpha_min, alpha_max = consts[0], consts[1], consts[2]
    for t in prange(n_tiles):
        if start[t + 1] == start[t]:
            continue
        ty = t // tiles_x
        tx = t - ty * tiles_x
        tx0, ty0 = tx * tile, ty * tile
        tx1, ty1 = min(tx0 + tile, width) - 1, min(ty0 + tile, height) - 1
        trans = np.ones((tile, tile), np.float64)
        done = np.zeros((tile, tile), np.bool_)
        acc = np.zeros((tile, tile, d), np.float64)
        acc_alpha = np.zeros((tile, tile), np.float64)
        acc_depth = np.zeros((tile, tile), np.float64)
        n_pixels = (tx1 - tx0 + 1) * (ty1 - ty0 + 1)
        n_done = 0
        for e in range(start[t], start[t + 1]):
            g = ids[e]
            mx, my = means2d[g, 0], means2d[g, 1]
            ca, cb, cc, o = conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            sigma_max = np.log(np.float64(o) / alpha_min)
            sigma_cut = sigma_max + 1e-3
            for py in range(max(boxes[g, 2], ty0), min(boxes[g, 3], ty1) + 1):
                x_lo, x_hi = _row_span(mx, my, ca, cb, cc, sigma_max, ys[py], max(boxes[g, 0], tx0),
                                       min(boxes[g, 1], tx1))  # fmt: skip
                dy = ys[py] - my
                for px in range(x_lo, x_hi + 1):
                    i, j = py - ty0, px - tx0
                    if done[i, j]:
                        continue
                    dx = xs[px] - mx
                    sigma = half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    if sigma < 0 or sigma > sigma_cut:  # beyond the cut, alpha < 1/255 whatever the rounding
                        continue
                    alpha = min(o * np.exp(-sigma), alpha_max)
                    if alpha < alpha_min:
                        continue
                    after = trans[i, j] * (1.0 - alpha)
                    if after < T_STOP:
                        done[i, j] = True
                        n_done += 1
                        continue
                    w = alpha * trans[i, j]
                    acc_alpha[i, j] += w
                    acc_depth[i, j] += w * depths[g]
                    for k in range(d):
                        acc[i, j, k] += w * colors[g, k]
                    trans[i, j] = after
            if n_done == n_pixels:
                break
        for py in range(ty0, ty1 + 1):
            for px in range(tx0, tx1 + 1):
                i, j = py - ty0, px - tx0
                out_alpha[py, px] = acc_alpha[i, j]
                out_depth[py, px] = acc_depth[i, j]
                for k in range(d):
                    out_color[py, px, k] = acc[i, j, k]


@njit(cache=True, parallel=True, nogil=True)
def _backward(start, ids, boxes, xs, ys, means2d, conics, opacities, depths, colors, consts, tile,
              g_color, g_alpha, g_depth, entry_grads):  # fmt: skip
    """Per (tile, Gaussian) entry: gradients of mean2d x, y; conic a, b, c; opacity; depth; colour (D)."""
    height, width = g_alpha.shape
    tiles_x = (width + tile - 1) // tile
    n_tiles = start.shape[0] - 1
    d = colors.shape[1]
    half, alpha_min, alpha_max = consts[0], consts[1], consts[2]
    for t in prange(n_tiles):
        if start[t + 1] == start[t]:
            continue
        ty = t // tiles_x
        tx = t - ty * tiles_x
        tx0, ty0 = tx * tile, ty * tile
        tx1, ty1 = min(tx0 + tile, width) - 1, min(ty0 + tile, height) - 1
        trans = np.ones((tile, tile), np.float64)
        done = np.zeros((tile, tile), np.bool_)
        total = np.zeros((tile, tile), np.float64)
        # pass 1: per pixel, S = sum of w_k (g . v_k) over its contributions
        for e in range(start[t], start[t + 1]):
            g = ids[e]
            mx, my = means2d[g, 0], means2d[g, 1]
            ca, cb, cc, o = conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            sigma_max = np.log(np.float64(o) / alpha_min)
            sigma_cut = sigma_max + 1e-3
            for py in range(max(boxes[g, 2], ty0), min(boxes[g, 3], ty1) + 1):
                x_lo, x_hi = _row_span(mx, my, ca, cb, cc, sigma_max, ys[py], max(boxes[g, 0], tx0),
                                       min(boxes[g, 1], tx1))  # fmt: skip
                dy = ys[py] - my
                for px in range(x_lo, x_hi + 1):
                    i, j = py - ty0, px - tx0
                    if done[i, j]:
                        continue
                    dx = xs[px] - mx
                    sigma = half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    if sigma < 0 or sigma > sigma_cut:  # beyond the cut, alpha < 1/255 whatever the rounding
                        continue
                    alpha = min(o * np.exp(-sigma), alpha_max)
                    if alpha < alpha_min:
                        continue
                    after = trans[i, j] * (1.0 - alpha)
                    if after < T_STOP:
                        done[i, j] = True
                        continue
                    gv = g_alpha[py, px] + g_depth[py, px] * depths[g]
                    for k in range(d):
                        gv += g_color[py, px, k] * colors[g, k]
                    total[i, j] += alpha * trans[i, j] * gv
                    trans[i, j] = after
        # pass 2: each contribution's gradient; what lies behind pair k is S minus the running prefix
        trans[:, :] = 1.0
        done[:, :] = False
        prefix = np.zeros((tile, tile), np.float64)
        grad = np.empty(7 + d, np.float64)
        for e in range(start[t], start[t + 1]):
            g = ids[e]
            mx, my = means2d[g, 0], means2d[g, 1]
            ca, cb, cc, o = conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            sigma_max = np.log(np.float64(o) / alpha_min)
            sigma_cut = sigma_max + 1e-3
            grad[:] = 0.0
            for py in range(max(boxes[g, 2], ty0), min(boxes[g, 3], ty1) + 1):
                x_lo, x_hi = _row_span(mx, my, ca, cb, cc, sigma_max, ys[py], max(boxes[g, 0], tx0),
                                       min(boxes[g, 1], tx1))  # fmt: skip
                dy = ys[py] - my
                for px in range(x_lo, x_hi + 1):
                    i, j = py - ty0, px - tx0
                    if done[i, j]:
                        continue
                    dx = xs[px] - mx
                    sigma = half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    if sigma < 0 or sigma > sigma_cut:
                        continue
                    gauss = np.exp(-sigma)
                    raw = o * gauss
                    alpha = min(raw, alpha_max)
                    if alpha < alpha_min:
                        continue
                    tr = trans[i, j]
                    after = tr * (1.0 - alpha)
                    if after < T_STOP:
                        done[i, j] = True
                        continue
                    w = alpha * tr
                    gd = g_depth[py, px]
                    gv = g_alpha[py, px] + gd * depths[g]
                    for k in range(d):
                        gv += g_color[py, px, k] * colors[g, k]
                    prefix[i, j] += w * gv
                    g_alph = gv * tr - (total[i, j] - prefix[i, j]) / (1.0 - alpha)
                    if raw > alpha_max:
                        g_alph = 0.0
                    g_sigma = -g_alph * raw
                    grad[0] += -g_sigma * (ca * dx + cb * dy)
                    grad[1] += -g_sigma * (cc * dy + cb * dx)
                    grad[2] += 0.5 * g_sigma * dx * dx
                    grad[3] += g_sigma * dx * dy
                    grad[4] += 0.5 * g_sigma * dy * dy
                    grad[5] += g_alph * gauss
                    grad[6] += gd * w
                    for k in range(d):
                        grad[7 + k] += g_color[py, px, k] * w
                    trans[i, j] = after
            for k in range(7 + d):
                entry_grads[e, k] = grad[k]


@njit(cache=True, nogil=True)
def _sum_entries(ids: np.ndarray, entry_grads: np.ndarray, out: np.ndarray) -> None:
    for e in range(ids.shape[0]):
        g = ids[e]
        for j in range(entry_grads.shape[1]):
            out[g, j] += entry_grads[e, j]


def _numpy(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


class _Camera:
    """One camera's compositing inputs as NumPy arrays, and its tile bins."""

    def __init__(
        self, projected: Projected, c: int, opacities: Tensor, colors: Tensor, width: int, height: int
    ):
        dtype = projected.means2d.dtype
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        visible = projected.visible[c]
        boxes = pixel_boxes(projected.means2d[c].detach(), projected.radii[c], visible, width, height)
        self.boxes = _numpy(boxes).astype(np.int32)
        depths = projected.depths[c].detach()
        self.order = _numpy(torch.argsort(depths, stable=True)).astype(np.int32)
        self.start, self.ids = _bin(self.boxes, self.order, width, height, TILE)
        self.xs = (np.arange(width) + 0.5).astype(np_dtype)
        self.ys = (np.arange(height) + 0.5).astype(np_dtype)
        self.consts = np.array([0.5, ALPHA_MIN, ALPHA_MAX], np_dtype)
        self.means2d = _numpy(projected.means2d[c])
        self.conics = _numpy(projected.conics[c])
        self.opacities = _numpy(opacities)
        self.depths = _numpy(projected.depths[c])
        self.colors = _numpy(colors[c])
        self.width, self.height = width, height

    def args(self) -> tuple:
        return (
            self.start, self.ids, self.boxes, self.xs, self.ys, self.means2d, self.conics, self.opacities,
            self.depths, self.colors, self.consts, TILE,
        )  # fmt: skip


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, depths, colors, projected, width, height):
        n_cams, n = depths.shape
        d = colors.shape[-1]
        np_dtype = np.float64 if means2d.dtype == torch.float64 else np.float32
        color = np.zeros((n_cams, height, width, d), np_dtype)
        alpha = np.zeros((n_cams, height, width), np_dtype)
        depth = np.zeros((n_cams, height, width), np_dtype)
        cams = []
        for c in range(n_cams):
            cam = _Camera(projected, c, opacities, colors, width, height)
            _forward(*cam.args(), color[c], alpha[c], depth[c])
            cams.append(cam)
        ctx.cams = cams
        ctx.shapes = (n_cams, n, d)
        device = means2d.device
        return (
            torch.from_numpy(color).to(device),
            torch.from_numpy(alpha).to(device)[..., None],
            torch.from_numpy(depth).to(device)[..., None],
        )

    @staticmethod
    def backward(ctx, g_color, g_alpha, g_depth):
        n_cams, n, d = ctx.shapes
        np_dtype = ctx.cams[0].means2d.dtype
        grads = np.zeros((n_cams, n, 7 + d), np.float64)
        gc, ga, gd = _numpy(g_color).astype(np_dtype), _numpy(g_alpha[..., 0]), _numpy(g_depth[..., 0])
        for c, cam in enumerate(ctx.cams):
            entry = np.zeros((cam.ids.shape[0], 7 + d), np.float64)
            _backward(*cam.args(), gc[c], ga[c].astype(np_dtype), gd[c].astype(np_dtype), entry)
            _sum_entries(cam.ids, entry, grads[c])
        dtype, device = g_color.dtype, g_color.device
        g = torch.from_numpy(grads).to(device=device, dtype=dtype)
        return g[..., 0:2], g[..., 2:5], g[..., 5].sum(0), g[..., 6], g[..., 7:], None, None, None


def rasterize_pixels_numba(
    projected: Projected, opacities: Tensor, colors: Tensor, width: int, height: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians front to back (same contract as ``torch_backend.rasterize_pixels``):
    colour (C, H, W, D), alpha (C, H, W, 1) and alpha-weighted depth (C, H, W, 1), without a background."""
    if projected.depths.shape[1] == 0:
        c, d = projected.depths.shape[0], colors.shape[-1]
        zeros = projected.means2d.new_zeros
        return zeros(c, height, width, d), zeros(c, height, width, 1), zeros(c, height, width, 1)
    return _Composite.apply(
        projected.means2d, projected.conics, opacities, projected.depths, colors, projected, width, height
    )
