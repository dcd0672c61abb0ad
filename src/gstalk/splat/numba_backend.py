"""Compiled CPU backend of ``rasterize()``: tile-binned front-to-back compositing in numba, with backward.

The design of the reference 3DGS rasterizer and gsplat, on CPU threads (kernels: ``numba_kernels``):

1. **Binning** (serial, O(N + pairs of Gaussian and tile)): every visible Gaussian's opacity-aware pixel
   box, the same box the torch backend pairs pixels with, covers a range of 8 × 32 tiles. Gaussians are
   visited in stable depth order (by group first) and appended to each tile they touch, so every tile's
   list comes out sorted front to back with no per-tile sort.
2. **Forward** (tiles in parallel on gstalk's worker threads, ``splat.threads``, balanced by each tile's
   estimated work): a tile walks its list front to back; each Gaussian updates the tile rows of its box,
   8 pixels a row, as SIMD lanes, with the torch backend's rules: ``alpha = min(0.99, o·exp(-σ))``, skip
   ``alpha < 1/255``, and a pixel stops before the Gaussian that would take its transmittance below 1e-4.
   σ and alpha are computed in the input's precision with the torch backend's operation order. When
   nothing needs gradients, the same pass also composites over the background and normalises the depth,
   so ``rasterize`` returns its outputs without further passes over the image.
3. **Backward** (tiles in parallel likewise), the reference 3DGS rasterizer's: the forward pass keeps
   each pixel's final transmittance and the tile entry of its last pair; each tile walks its list back
   to front, the transmittance in front of a pair being the one behind it divided by ``1 - alpha``, and
   the sum of ``w (g · v)`` over a pixel's later pairs (w the weight, v the values 1, depth, colour, g
   the output gradient) growing as it goes, so nothing cancels. Each (tile, Gaussian) entry sums its own
   gradient, so tiles never share memory, and a serial pass sums the entries per Gaussian.

Only the compositing has a hand-written backward: projection stays the shared PyTorch code when gradients
are needed, so its gradients (to means, rotations, scales, cameras) come from autograd exactly as for the
torch backend; rendering uses a compiled copy of it (``project_gaussians_numba``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch
from torch import Tensor

from . import numba_kernels as nk
from .projection import ALPHA_MIN, FAR_PLANE, LOW_PASS, NEAR_PLANE, Projected
from .threads import for_each_part, split_range, split_tiles
from .torch_backend import ALPHA_MAX, T_STOP

#: the smallest alpha ``rasterize`` divides the depth by (its ``alpha.clamp(min=1e-10)``)
DEPTH_ALPHA_MIN = 1e-10

_clock: dict[str, float] | None = None


@contextmanager
def stage_clock() -> Iterator[dict[str, float]]:
    """Within the block, accumulate the wall-clock seconds of each stage of this backend (``project``,
    ``bin``, ``forward``, ``backward``, ``gather``) into the dict yielded: for profiling."""
    global _clock
    previous, _clock = _clock, {}
    try:
        yield _clock
    finally:
        _clock = previous


@contextmanager
def _stage(name: str) -> Iterator[None]:
    if _clock is None:
        yield
        return
    start = time.perf_counter()
    try:
        yield
    finally:
        _clock[name] = _clock.get(name, 0.0) + time.perf_counter() - start


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
    """``projection.project_gaussians(means, covariance_3d(quats, scales), ...)``, compiled, with its
    gradients to means, quats, scales, world_to_cam and intrinsics written out (``nk.project_backward``).
    Same rules (the Jacobian clamp, the 0.3 px² low-pass, opacity-aware boxes), computed in float64 per
    Gaussian and returned in the inputs' dtype."""
    size = (width, height)
    means2d, conics, depths, radii = _Project.apply(
        means, quats, scales, opacities, world_to_cam, intrinsics, size
    )
    return Projected(means2d, conics, depths, radii)


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, world_to_cam, intrinsics, size):
        with _stage("project"):
            n_cams, n = world_to_cam.shape[0], means.shape[0]
            m, q, s, o, w2c, intr = (
                _numpy(t).astype(np.float64, copy=False)
                for t in (means, quats, scales, opacities, world_to_cam, intrinsics)
            )
            means2d, conics = np.empty((n_cams, n, 2)), np.empty((n_cams, n, 3))
            depths, radii = np.empty((n_cams, n)), np.empty((n_cams, n, 2), np.int32)
            rules = (*size, NEAR_PLANE, FAR_PLANE, LOW_PASS, ALPHA_MIN)
            for c in range(n_cams):
                outs = (means2d[c], conics[c], depths[c], radii[c])
                for_each_part(
                    lambda part, c=c, outs=outs: nk.project(
                        *part, m, q, s, o, w2c[c], intr[c], *rules, *outs
                    ),
                    split_range(n),
                )
            ctx.inputs, ctx.size = (m, q, s, w2c, intr), size
            ctx.dtypes = tuple(t.dtype for t in (means, quats, scales, world_to_cam, intrinsics))
            radii_t = _tensor(radii, means)
            ctx.mark_non_differentiable(radii_t)
            return _tensor(means2d, means), _tensor(conics, means), _tensor(depths, means), radii_t

    @staticmethod
    def backward(ctx, g_means2d, g_conics, g_depths, _g_radii):
        with _stage("project"):
            m, q, s, w2c, intr = ctx.inputs
            g_m2d, g_con, g_dep = (
                _numpy(g).astype(np.float64, copy=False) for g in (g_means2d, g_conics, g_depths)
            )
            grads = (np.zeros_like(m), np.zeros_like(q), np.zeros_like(s))  # means, quats, scales
            g_w2c, g_intr = np.zeros(w2c.shape), np.zeros(intr.shape)
            rules = (*ctx.size, NEAR_PLANE, FAR_PLANE, LOW_PASS)
            for c in range(w2c.shape[0]):
                parts = split_range(m.shape[0])
                g_cam = np.zeros((len(parts), 20))  # per part: camera gradients sum over its Gaussians
                inputs = (m, q, s, w2c[c], intr[c], *rules, g_m2d[c], g_con[c], g_dep[c], *grads)
                for_each_part(
                    lambda k, inputs=inputs, parts=parts, g_cam=g_cam: nk.project_backward(
                        *parts[k], *inputs, g_cam[k]
                    ),
                    range(len(parts)),
                )
                total = g_cam.sum(0)
                g_w2c[c, :3] = total[:12].reshape(3, 4)
                g_intr[c] = total[12:16]
            out = [_tensor(g, g_means2d, dtype) for g, dtype in zip((*grads, g_w2c, g_intr), ctx.dtypes)]
            return out[0], out[1], out[2], None, out[3], out[4], None


def _numpy(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy())


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def _tensor(a: np.ndarray, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``a`` as a tensor on ``like``'s device; floats in ``dtype`` (default: like's), integers as they are.
    Converted in NumPy (one thread): PyTorch's OpenMP fork and join around a copy stalls when other
    processes hold the cores."""
    if a.dtype.kind != "f":
        return torch.from_numpy(a).to(like.device)
    dtype = dtype or like.dtype
    if dtype in _NUMPY_DTYPES:
        return torch.from_numpy(a.astype(_NUMPY_DTYPES[dtype], copy=False)).to(like.device)
    return torch.from_numpy(a).to(device=like.device, dtype=dtype)


def _consts(np_dtype) -> np.ndarray:
    """The kernels' constants in the compositing precision: ½, the alpha floor and clamp, 1, the stop
    threshold, 0 and the depth's alpha floor. ``T < T_STOP`` is tested as ``T <= t_stop``, t_stop the
    largest value of the precision below T_STOP, so float32 transmittances decide as the float64 test."""
    t_stop = np_dtype(T_STOP)
    if float(t_stop) >= T_STOP:
        t_stop = np.nextafter(t_stop, np_dtype(0))
    return np.array([0.5, ALPHA_MIN, ALPHA_MAX, 1.0, t_stop, 0.0, DEPTH_ALPHA_MIN], np_dtype)


def _bin(boxes, order, width, height, means2d, conics, opacities):
    """``nk.bin_tiles``, its per-Gaussian pass (the ellipses' tile columns, the entry counts and costs) on
    gstalk's workers in ranges of Gaussians, each with its own counts, summed before the serial fill."""
    n_tiles = (-(-width // nk.TILE_W)) * (-(-height // nk.TILE_H))
    first = nk.first_bands(boxes, height)
    band_cols = np.empty((first[-1], 2), np.int32)
    parts = split_range(boxes.shape[0], per_worker=1, min_per_part=4000)
    counts = np.zeros((len(parts), n_tiles), np.int64)
    costs = np.zeros((len(parts), n_tiles), np.int64)
    args = (boxes, first, width, means2d, conics, opacities, ALPHA_MIN, band_cols)
    for_each_part(lambda k: nk.band_tiles(*parts[k], *args, counts[k], costs[k]), range(len(parts)))
    start, ids = nk.fill_tiles(order, boxes, first, band_cols, counts.sum(0), width)
    return start, ids, costs.sum(0) + 1  # an empty tile is still written


class _Camera:
    """One camera's compositing inputs as NumPy arrays, its tile bins, and the tiles split over workers."""

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
        np_dtype = np.float64 if projected.means2d.dtype == torch.float64 else np.float32
        self.consts = _consts(np_dtype)
        self.means2d = _numpy(projected.means2d[c])
        with _stage("bin"):
            radii = _numpy(projected.radii[c])
            self.boxes = nk.pixel_boxes(self.means2d, radii, width, height, self.consts[0])
            groups_np = (
                np.zeros(0, np.int32) if groups is None else _numpy(groups).astype(np.int32, copy=False)
            )
            order = nk.draw_order(_numpy(projected.depths[c]), groups_np)
            self.conics = _numpy(projected.conics[c])
            self.opacities = _numpy(opacities)
            self.start, self.ids, cost = _bin(
                self.boxes, order, width, height, self.means2d, self.conics, self.opacities
            )
            busy = np.flatnonzero(self.start[1:] > self.start[:-1])
            self.parts = split_tiles(np.arange(cost.size), cost)  # every tile: empty ones are written too
            self.busy_parts = split_tiles(busy, cost[busy])
        tiles_x, tiles_y = -(-width // nk.TILE_W), -(-height // nk.TILE_H)
        self.xs = (np.arange(tiles_x * nk.TILE_W) + 0.5).astype(np_dtype)  # pixel centres, whole tiles
        self.ys = (np.arange(tiles_y * nk.TILE_H) + 0.5).astype(np_dtype)
        self.depths = _numpy(projected.depths[c])
        self.colors = _numpy(colors[c])
        self.width, self.height = width, height

    def args(self) -> tuple:
        return (
            self.start, self.ids, self.boxes, self.xs, self.ys, self.means2d, self.conics, self.opacities,
            self.depths, self.colors, self.consts,
        )  # fmt: skip


def _run_forward(tiles: np.ndarray, cam: _Camera, outs: tuple) -> None:
    nk.forward_tiles(tiles, *cam.args(), *outs)


def _run_backward(tiles: np.ndarray, cam: _Camera, grads_in: tuple) -> None:
    nk.backward_tiles(tiles, *cam.args(), *grads_in)


def _empty(np_dtype, ndim: int) -> np.ndarray:
    return np.zeros((0,) * ndim, np_dtype)


class _Composite(torch.autograd.Function):
    """Compositing with its hand-written backward. With a ``background`` it returns ``rasterize``'s final
    image over it, alpha and expected depth (and the backward maps their gradients back through that
    arithmetic per pixel); with None, the raw sums (colour, alpha, alpha-weighted depth)."""

    @staticmethod
    def forward(
        ctx,
        means2d,
        conics,
        opacities,
        depths,
        colors,
        background,
        projected,
        width,
        height,
        groups,
        stats,
        with_depth=True,
    ):
        n_cams, n = depths.shape
        d = colors.shape[-1]
        np_dtype = np.float64 if means2d.dtype == torch.float64 else np.float32
        color = np.empty((n_cams, height, width, d), np_dtype)
        alpha = np.empty((n_cams, height, width), np_dtype)
        keep = torch.is_grad_enabled() or any(ctx.needs_input_grad)
        depth = np.empty((n_cams, height, width) if keep or with_depth else (n_cams, 0, 0), np_dtype)
        size = (n_cams, height, width) if keep else (n_cams, 0, 0)
        trans, last = np.empty(size, np_dtype), np.empty(size, np.int32)
        if background is None:
            bg = np.zeros((n_cams, 0, 0, 0), np_dtype)
        else:
            bg = np.broadcast_to(_numpy(background).astype(np_dtype, copy=False), (n_cams, height, width, d))
        cams = []
        for c in range(n_cams):
            cam = _Camera(projected, c, opacities, colors, width, height, groups)
            outs = (color[c], alpha[c], depth[c], trans[c], last[c], bg[c])
            with _stage("forward"):
                for_each_part(partial(_run_forward, cam=cam, outs=outs), cam.parts)
            cams.append(cam)
        if keep:
            ctx.cams, ctx.trans, ctx.last, ctx.bg, ctx.stats = cams, trans, last, bg, stats
            ctx.outs = (alpha, depth) if background is not None else None
            ctx.shapes = (n_cams, n, d)
            ctx.save_for_backward(None if background is None else background)
        device = means2d.device
        alpha_t = torch.from_numpy(alpha).to(device)[..., None]
        if background is not None and ctx.needs_input_grad[5]:
            ctx.alpha = alpha_t
        return torch.from_numpy(color).to(device), alpha_t, torch.from_numpy(depth).to(device)[..., None]

    @staticmethod
    def backward(ctx, g_color, g_alpha, g_depth):
        n_cams, n, d = ctx.shapes
        np_dtype = ctx.cams[0].consts.dtype
        columns = 7 + d + (3 if ctx.stats is not None else 0)  # the statistics after the gradients
        grads = np.zeros((n_cams, n, columns), np.float64)
        gc = _numpy(g_color).astype(np_dtype, copy=False)
        ga = _numpy(g_alpha[..., 0]).astype(np_dtype, copy=False)
        gd = _numpy(g_depth[..., 0]).astype(np_dtype, copy=False)
        for c, cam in enumerate(ctx.cams):
            entry = np.empty((cam.ids.shape[0], columns), np.float64)
            if ctx.outs is None:  # raw sums
                outs = (_empty(np_dtype, 2), _empty(np_dtype, 2), ctx.bg[c])
            else:
                outs = (ctx.outs[0][c], ctx.outs[1][c], ctx.bg[c])
            grads_in = (ctx.trans[c], ctx.last[c], *outs, gc[c], ga[c], gd[c], entry)
            with _stage("backward"):
                for_each_part(partial(_run_backward, cam=cam, grads_in=grads_in), cam.busy_parts)
            with _stage("gather"):
                nk.sum_entries(cam.ids, entry, grads[c])
        g = _tensor(grads, g_color)
        if ctx.stats is not None:
            ctx.stats["absgrad"] = torch.from_numpy(grads[..., 7 + d : 9 + d]).to(g.device)
            ctx.stats["weight"] = torch.from_numpy(grads[..., 9 + d]).to(g.device)
        (background,) = ctx.saved_tensors
        g_bg = None
        if background is not None and ctx.needs_input_grad[5]:
            g_bg = (g_color * (1.0 - ctx.alpha)).sum_to_size(background.shape)
        g_colors = g[..., 7 : 7 + d]
        return (
            g[..., 0:2],
            g[..., 2:5],
            g[..., 5].sum(0),
            g[..., 6],
            g_colors,
            g_bg,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def rasterize_pixels_numba(
    projected: Projected,
    opacities: Tensor,
    colors: Tensor,
    width: int,
    height: int,
    groups: Tensor | None = None,
    stats: dict | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians front to back (same contract as ``torch_backend.rasterize_pixels``):
    colour (C, H, W, D), alpha (C, H, W, 1) and alpha-weighted depth (C, H, W, 1), without a background.
    ``stats``: see ``rasterize``."""
    p = projected
    return _Composite.apply(
        p.means2d, p.conics, opacities, p.depths, colors, None, p, width, height, groups, stats
    )


def rasterize_image_numba(
    projected: Projected,
    opacities: Tensor,
    colors: Tensor,
    background: Tensor,
    width: int,
    height: int,
    groups: Tensor | None = None,
    stats: dict | None = None,
    with_depth: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """``rasterize``'s final outputs from one compiled pass, differentiable: the image composited over
    ``background`` (C, H, W, D), alpha (C, H, W, 1), and the expected depth (C, H, W, 1), the weighted
    depth divided by ``max(alpha, 1e-10)``, as ``rasterize`` computes them.

    background: broadcastable to (C, H, W, D), in the projection's dtype (a scalar, a colour (1, 1, 1, D)
    or per camera (C, 1, 1, D), or images); it receives a gradient when it requires one. ``stats``: see
    ``rasterize``. ``with_depth`` False: without gradients, the depth is not computed (an empty (C, 0, 0, 1)
    tensor stands for it)."""
    p = projected
    return _Composite.apply(
        p.means2d,
        p.conics,
        opacities,
        p.depths,
        colors,
        background,
        p,
        width,
        height,
        groups,
        stats,
        with_depth,
    )
