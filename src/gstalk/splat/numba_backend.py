"""Compiled CPU backend of ``rasterize()``: tile-binned front-to-back compositing in numba, with backward.

The design of the reference 3DGS rasterizer and gsplat, on CPU threads:

1. **Binning** (serial, O(N + pairs of Gaussian and tile)): every visible Gaussian's opacity-aware pixel
   box, the same box the torch backend pairs pixels with, covers a range of 16 × 16 tiles. Gaussians are
   visited in stable depth order and appended to each tile they touch, so every tile's list comes out
   sorted front to back with no per-tile sort.
2. **Forward** (tiles in parallel on gstalk's worker threads, ``splat.threads``): a tile walks its list
   front to back, and each Gaussian
   updates only the pixels of its box that its ellipse can reach (per row, the span where
   ``σ ≤ log(o · 255)``, a pixel wider on each side), with the torch backend's rules:
   ``alpha = min(0.99, o·exp(-σ))``, skip ``alpha < 1/255``, and a pixel stops before the Gaussian that
   would take its transmittance below 1e-4. The per-pair quantities that decide those rules (σ, alpha)
   are computed in the input's precision with the torch backend's operation order; transmittance and
   sums are float64.
3. **Backward** (tiles in parallel likewise): per pixel, ``S = Σ w_k (g · v_k)`` (w the pair's weight, v
   its values 1, depth, colour; g the output gradient) is g dotted with the float64 sums the forward pass
   kept; one walk then gives each pair's gradient, the contribution behind pair k being ``S`` minus the
   pixel's running prefix: no division by ``1 - alpha``. Each (tile, Gaussian) entry sums its own
   gradient, so tiles never share memory, and a serial pass sums the entries per Gaussian.

Only the compositing is compiled: projection stays the shared PyTorch code, so its gradients (to means,
rotations, scales, cameras) come from autograd exactly as for the torch backend.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from numba import njit
from torch import Tensor

from .projection import ALPHA_MIN, FAR_PLANE, LOW_PASS, NEAR_PLANE, Projected
from .threads import for_each_part, split_range, split_tiles
from .torch_backend import ALPHA_MAX, T_STOP, draw_order, pixel_boxes

TILE = 16

#: 2^(-m/16) for the exponential below: σ stays under ln(255) + 0.001 < 5.6, so m < 130
_EXP2_TABLE = np.exp2(-np.arange(0, 160) / 16.0)


@njit(cache=True, nogil=True, inline="always")
def _exp_neg(x, table):
    """exp(-x) for 0 <= x < 6.9, in float64 to a relative 1.4e-9: a table of 2^(-m/16) and a degree-4
    polynomial on the remainder. libm's exp was 40 % of the compositing time."""
    y = x * (16.0 / np.log(2.0))
    m = int(y)
    r = (y - m) * (np.log(2.0) / 16.0)
    return table[m] * (1.0 - r * (1.0 - r * (0.5 - r * (1.0 / 6.0 - r * (1.0 / 24.0)))))


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
    """Columns of one row whose pixel centres the ellipse σ(dx, dy) ≤ sigma_max contains, computed in
    float64 and widened by 0.01 px (far more than float32 rounding of σ moves the edge; the exact alpha
    test decides), clipped to [x0, x1]. Empty when the first returned exceeds the last."""
    dy = py_centre - my
    disc = (b * b - a * c) * dy * dy + 2.0 * a * sigma_max
    if disc < 0.0:
        return x0, x0 - 1
    root = np.sqrt(disc)
    lo = mx - 0.5 + (-b * dy - root) / a
    hi = mx - 0.5 + (-b * dy + root) / a
    return max(x0, int(np.ceil(lo - 0.01))), min(x1, int(np.floor(hi + 0.01)))


@njit(cache=True, nogil=True)
def _forward(tiles, start, ids, boxes, xs, ys, means2d, conics, opacities, depths, colors, consts, tile,
             out_color, out_alpha, out_depth, out_sums):  # fmt: skip
    """Composite every pixel; outputs are (H, W, D), (H, W), (H, W) and start zeroed. When ``out_sums`` is
    (H, W, D + 2) rather than empty, it also receives the float64 sums (colour, alpha, depth) the backward
    pass needs.

    Within a tile, Gaussians are visited front to back and each updates the pixels of its box that its
    ellipse can reach; a pixel whose transmittance would fall below T_STOP is done (its transmittance set
    to 0, which no live pixel reaches) for all later ones."""
    height, width = out_alpha.shape
    tiles_x = (width + tile - 1) // tile
    d = colors.shape[1]
    stride = d + 2  # per pixel: colour (D), alpha, depth
    half, alpha_min, alpha_max = consts[0], consts[1], consts[2]
    for t in tiles:
        if start[t + 1] == start[t]:
            continue
        ty = t // tiles_x
        tx = t - ty * tiles_x
        tx0, ty0 = tx * tile, ty * tile
        tx1, ty1 = min(tx0 + tile, width) - 1, min(ty0 + tile, height) - 1
        trans = np.ones(tile * tile)
        acc = np.zeros(tile * tile * stride)
        n_pixels = (tx1 - tx0 + 1) * (ty1 - ty0 + 1)
        n_done = 0
        for e in range(start[t], start[t + 1]):
            g = ids[e]
            mx, my = means2d[g, 0], means2d[g, 1]
            ca, cb, cc, o = conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            z = np.float64(depths[g])
            sigma_max = np.log(np.float64(o) / alpha_min)
            sigma_cut = sigma_max + 1e-3  # beyond it, alpha < 1/255 whatever the rounding
            bx0, bx1 = max(boxes[g, 0], tx0), min(boxes[g, 1], tx1)
            for py in range(max(boxes[g, 2], ty0), min(boxes[g, 3], ty1) + 1):
                x_lo, x_hi = _row_span(mx, my, ca, cb, cc, sigma_max, ys[py], bx0, bx1)
                dy = ys[py] - my
                row = (py - ty0) * tile - tx0
                for px in range(x_lo, x_hi + 1):
                    p = row + px
                    tr = trans[p]
                    if tr == 0.0:
                        continue
                    dx = xs[px] - mx
                    sigma = half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    if sigma < 0 or sigma > sigma_cut:
                        continue
                    alpha = min(o * _exp_neg(sigma, _EXP2_TABLE), alpha_max)
                    if alpha < alpha_min:
                        continue
                    after = tr * (1.0 - alpha)
                    if after < T_STOP:
                        trans[p] = 0.0
                        n_done += 1
                        continue
                    w = alpha * tr
                    if d == 3:  # RGB: straight-line code (a loop over a runtime D costs 30 %)
                        q = p * 5
                        acc[q] += w * colors[g, 0]
                        acc[q + 1] += w * colors[g, 1]
                        acc[q + 2] += w * colors[g, 2]
                        acc[q + 3] += w
                        acc[q + 4] += w * z
                    else:
                        q = p * stride
                        for k in range(d):
                            acc[q + k] += w * colors[g, k]
                        acc[q + d] += w
                        acc[q + d + 1] += w * z
                    trans[p] = after
            if n_done == n_pixels:
                break
        keep = out_sums.shape[0] > 0
        for py in range(ty0, ty1 + 1):
            for px in range(tx0, tx1 + 1):
                q = ((py - ty0) * tile + px - tx0) * stride
                for k in range(d):
                    out_color[py, px, k] = acc[q + k]
                out_alpha[py, px] = acc[q + d]
                out_depth[py, px] = acc[q + d + 1]
                if keep:
                    for k in range(stride):
                        out_sums[py, px, k] = acc[q + k]


@njit(cache=True, nogil=True)
def _backward(tiles, start, ids, boxes, xs, ys, means2d, conics, opacities, depths, colors, consts, tile,
              sums, g_color, g_alpha, g_depth, entry_grads):  # fmt: skip
    """Per (tile, Gaussian) entry: gradients of mean2d x, y; conic a, b, c; opacity; depth; colour (D)."""
    height, width = g_alpha.shape
    tiles_x = (width + tile - 1) // tile
    d = colors.shape[1]
    half, alpha_min, alpha_max = consts[0], consts[1], consts[2]
    for t in tiles:
        if start[t + 1] == start[t]:
            continue
        ty = t // tiles_x
        tx = t - ty * tiles_x
        tx0, ty0 = tx * tile, ty * tile
        tx1, ty1 = min(tx0 + tile, width) - 1, min(ty0 + tile, height) - 1
        # per pixel, S = sum of w_k (g . v_k) over its contributions = g . (the forward pass's sums)
        total = np.zeros(tile * tile)
        for py in range(ty0, ty1 + 1):
            for px in range(tx0, tx1 + 1):
                v = g_alpha[py, px] * sums[py, px, d] + g_depth[py, px] * sums[py, px, d + 1]
                for k in range(d):
                    v += g_color[py, px, k] * sums[py, px, k]
                total[(py - ty0) * tile + px - tx0] = v
        # each contribution's gradient; what lies behind pair k is S minus the pixel's running prefix
        trans = np.ones(tile * tile)
        prefix = np.zeros(tile * tile)
        grad = np.empty(7 + d, np.float64)
        for e in range(start[t], start[t + 1]):
            g = ids[e]
            mx, my = means2d[g, 0], means2d[g, 1]
            ca, cb, cc, o = conics[g, 0], conics[g, 1], conics[g, 2], opacities[g]
            sigma_max = np.log(np.float64(o) / alpha_min)
            sigma_cut = sigma_max + 1e-3
            grad[:] = 0.0
            bx0, bx1 = max(boxes[g, 0], tx0), min(boxes[g, 1], tx1)
            for py in range(max(boxes[g, 2], ty0), min(boxes[g, 3], ty1) + 1):
                x_lo, x_hi = _row_span(mx, my, ca, cb, cc, sigma_max, ys[py], bx0, bx1)
                dy = ys[py] - my
                row = (py - ty0) * tile - tx0
                for px in range(x_lo, x_hi + 1):
                    p = row + px
                    tr = trans[p]
                    if tr == 0.0:
                        continue
                    dx = xs[px] - mx
                    sigma = half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
                    if sigma < 0 or sigma > sigma_cut:
                        continue
                    gauss = _exp_neg(sigma, _EXP2_TABLE)
                    raw = o * gauss
                    alpha = min(raw, alpha_max)
                    if alpha < alpha_min:
                        continue
                    after = tr * (1.0 - alpha)
                    if after < T_STOP:
                        trans[p] = 0.0
                        continue
                    w = alpha * tr
                    gd = g_depth[py, px]
                    gv = g_alpha[py, px] + gd * depths[g]
                    if d == 3:
                        gv += g_color[py, px, 0] * colors[g, 0] + g_color[py, px, 1] * colors[g, 1]
                        gv += g_color[py, px, 2] * colors[g, 2]
                    else:
                        for k in range(d):
                            gv += g_color[py, px, k] * colors[g, k]
                    prefix[p] += w * gv
                    g_alph = gv * tr - (total[p] - prefix[p]) / (1.0 - alpha)
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
                    if d == 3:
                        grad[7] += g_color[py, px, 0] * w
                        grad[8] += g_color[py, px, 1] * w
                        grad[9] += g_color[py, px, 2] * w
                    else:
                        for k in range(d):
                            grad[7 + k] += g_color[py, px, k] * w
                    trans[p] = after
            for k in range(7 + d):
                entry_grads[e, k] = grad[k]


@njit(cache=True, nogil=True)
def _sum_entries(ids: np.ndarray, entry_grads: np.ndarray, out: np.ndarray) -> None:
    for e in range(ids.shape[0]):
        g = ids[e]
        for j in range(entry_grads.shape[1]):
            out[g, j] += entry_grads[e, j]


@njit(cache=True, nogil=True)
def _project(lo, hi, means, quats, scales, opacities, w2c, intr, width, height, near, far, low_pass,
             alpha_min, out_means2d, out_conics, out_depths, out_radii):  # fmt: skip
    """The torch backend's ``project_gaussians`` for one camera, forward only, one Gaussian per iteration."""
    fx, fy, cx, cy = intr[0], intr[1], intr[2], intr[3]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    for i in range(lo, hi):
        qn = np.sqrt(quats[i, 0] ** 2 + quats[i, 1] ** 2 + quats[i, 2] ** 2 + quats[i, 3] ** 2)
        qn = max(qn, 1e-12)
        w, x, y, z = quats[i, 0] / qn, quats[i, 1] / qn, quats[i, 2] / qn, quats[i, 3] / qn
        r = np.empty((3, 3))
        r[0, 0], r[0, 1], r[0, 2] = 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)
        r[1, 0], r[1, 1], r[1, 2] = 2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)
        r[2, 0], r[2, 1], r[2, 2] = 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)
        # camera-space rotation of the Gaussian's axes, scaled: V = W R S; covariance V Vᵀ
        v = np.empty((3, 3))
        for a in range(3):
            for b in range(3):
                v[a, b] = (w2c[a, 0] * r[0, b] + w2c[a, 1] * r[1, b] + w2c[a, 2] * r[2, b]) * scales[i, b]
        px = w2c[0, 0] * means[i, 0] + w2c[0, 1] * means[i, 1] + w2c[0, 2] * means[i, 2] + w2c[0, 3]
        py = w2c[1, 0] * means[i, 0] + w2c[1, 1] * means[i, 1] + w2c[1, 2] * means[i, 2] + w2c[1, 3]
        pz = w2c[2, 0] * means[i, 0] + w2c[2, 1] * means[i, 1] + w2c[2, 2] * means[i, 2] + w2c[2, 3]
        out_depths[i] = pz
        out_radii[i, 0] = 0
        out_radii[i, 1] = 0
        in_depth = near < pz < far
        zs = pz if in_depth else 1.0
        tx = zs * min(max(px / zs, -lim_x_neg), lim_x_pos)
        ty = zs * min(max(py / zs, -lim_y_neg), lim_y_pos)
        j00, j02 = fx / zs, -fx * tx / (zs * zs)
        j11, j12 = fy / zs, -fy * ty / (zs * zs)
        # J V: (2, 3); cov2d = (J V)(J V)ᵀ
        a0 = j00 * v[0, 0] + j02 * v[2, 0]
        a1 = j00 * v[0, 1] + j02 * v[2, 1]
        a2 = j00 * v[0, 2] + j02 * v[2, 2]
        b0 = j11 * v[1, 0] + j12 * v[2, 0]
        b1 = j11 * v[1, 1] + j12 * v[2, 1]
        b2 = j11 * v[1, 2] + j12 * v[2, 2]
        ca = a0 * a0 + a1 * a1 + a2 * a2 + low_pass
        cb = a0 * b0 + a1 * b1 + a2 * b2
        cc = b0 * b0 + b1 * b1 + b2 * b2 + low_pass
        det = ca * cc - cb * cb
        mx, my = fx * px / zs + cx, fy * py / zs + cy
        out_means2d[i, 0], out_means2d[i, 1] = mx, my
        det_safe = det if (in_depth and det > 0) else 1.0
        out_conics[i, 0], out_conics[i, 1], out_conics[i, 2] = cc / det_safe, -cb / det_safe, ca / det_safe
        o = opacities[i]
        if not (in_depth and det > 0 and o >= alpha_min):
            continue
        extend = min(np.sqrt(2.0 * np.log(max(o, alpha_min) / alpha_min)), 3.33)
        rx = np.ceil(extend * np.sqrt(max(ca, 0.0)))
        ry = np.ceil(extend * np.sqrt(max(cc, 0.0)))
        on_screen = (mx + rx > 0) and (mx - rx < width) and (my + ry > 0) and (my - ry < height)
        if on_screen and np.isfinite(rx) and np.isfinite(ry) and (rx > 0 or ry > 0):
            out_radii[i, 0] = min(rx, 1e6)
            out_radii[i, 1] = min(ry, 1e6)


def project_gaussians_numba(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    world_to_cam: Tensor,
    intrinsics: Tensor,
    width: int,
    height: int,
) -> Projected:
    """``projection.project_gaussians`` without gradients, compiled: for rendering. Same rules (the
    Jacobian clamp, the 0.3 px² low-pass, opacity-aware boxes), computed in float64 per Gaussian."""
    n_cams, n = world_to_cam.shape[0], means.shape[0]
    dtype = means.dtype
    m, q, s, o = (
        np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float64)
        for t in (means, quats, scales, opacities)
    )
    means2d = np.empty((n_cams, n, 2))
    conics = np.empty((n_cams, n, 3))
    depths = np.empty((n_cams, n))
    radii = np.empty((n_cams, n, 2), np.int32)
    for c in range(n_cams):
        w2c, intr = _numpy(world_to_cam[c]).astype(np.float64), _numpy(intrinsics[c]).astype(np.float64)
        project = partial(
            _project, means=m, quats=q, scales=s, opacities=o, w2c=w2c, intr=intr, width=width, height=height,
            near=NEAR_PLANE, far=FAR_PLANE, low_pass=LOW_PASS, alpha_min=ALPHA_MIN, out_means2d=means2d[c],
            out_conics=conics[c], out_depths=depths[c], out_radii=radii[c],
        )  # fmt: skip
        for_each_part(lambda part, project=project: project(*part), split_range(n))
    as_tensor = lambda a: torch.from_numpy(a).to(device=means.device, dtype=dtype)  # noqa: E731
    return Projected(
        as_tensor(means2d), as_tensor(conics), as_tensor(depths), torch.from_numpy(radii).to(means.device)
    )


def _numpy(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


class _Camera:
    """One camera's compositing inputs as NumPy arrays, and its tile bins."""

    def __init__(
        self,
        projected: Projected,
        c: int,
        opacities: Tensor,
        colors: Tensor,
        width: int,
        height: int,
        groups: Tensor | None = None,
    ):
        dtype = projected.means2d.dtype
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        visible = projected.visible[c]
        boxes = pixel_boxes(projected.means2d[c].detach(), projected.radii[c], visible, width, height)
        self.boxes = _numpy(boxes).astype(np.int32)
        depths = projected.depths[c].detach()
        self.order = _numpy(draw_order(depths, groups)).astype(np.int32)
        self.start, self.ids = _bin(self.boxes, self.order, width, height, TILE)
        self.tiles = split_tiles(np.flatnonzero(np.diff(self.start) > 0))
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


def _run_forward(tiles: np.ndarray, cam: _Camera, outs: tuple) -> None:
    _forward(tiles, *cam.args(), *outs)


def _run_backward(tiles: np.ndarray, cam: _Camera, grads_in: tuple) -> None:
    _backward(tiles, *cam.args(), *grads_in)


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, depths, colors, projected, width, height, groups):
        n_cams, n = depths.shape
        d = colors.shape[-1]
        np_dtype = np.float64 if means2d.dtype == torch.float64 else np.float32
        color = np.zeros((n_cams, height, width, d), np_dtype)
        alpha = np.zeros((n_cams, height, width), np_dtype)
        depth = np.zeros((n_cams, height, width), np_dtype)
        keep = torch.is_grad_enabled() or any(ctx.needs_input_grad)
        sums = np.zeros((n_cams, height, width, d + 2) if keep else (n_cams, 0, 0, 0))
        cams = []
        for c in range(n_cams):
            cam = _Camera(projected, c, opacities, colors, width, height, groups)
            outs = (color[c], alpha[c], depth[c], sums[c])
            for_each_part(partial(_run_forward, cam=cam, outs=outs), cam.tiles)
            cams.append(cam)
        ctx.cams, ctx.sums = cams, sums
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
            grads_in = (ctx.sums[c], gc[c], ga[c].astype(np_dtype), gd[c].astype(np_dtype), entry)
            backward = partial(_run_backward, cam=cam, grads_in=grads_in)
            for_each_part(backward, cam.tiles)
            _sum_entries(cam.ids, entry, grads[c])
        dtype, device = g_color.dtype, g_color.device
        g = torch.from_numpy(grads).to(device=device, dtype=dtype)
        return g[..., 0:2], g[..., 2:5], g[..., 5].sum(0), g[..., 6], g[..., 7:], None, None, None, None


def rasterize_pixels_numba(
    projected: Projected,
    opacities: Tensor,
    colors: Tensor,
    width: int,
    height: int,
    groups: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians front to back (same contract as ``torch_backend.rasterize_pixels``):
    colour (C, H, W, D), alpha (C, H, W, 1) and alpha-weighted depth (C, H, W, 1), without a background."""
    if projected.depths.shape[1] == 0:
        c, d = projected.depths.shape[0], colors.shape[-1]
        zeros = projected.means2d.new_zeros
        return zeros(c, height, width, d), zeros(c, height, width, 1), zeros(c, height, width, 1)
    return _Composite.apply(
        projected.means2d,
        projected.conics,
        opacities,
        projected.depths,
        colors,
        projected,
        width,
        height,
        groups,
    )
