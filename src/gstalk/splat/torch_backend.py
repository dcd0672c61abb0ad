"""Pure-PyTorch EWA splatting: exact front-to-back compositing over pixel–Gaussian pairs.

Every Gaussian that survives projection is paired with the pixels of its opacity-aware bounding box.
Pairs whose ``alpha < 1/255`` are dropped, the rest are sorted by (pixel, depth), and each pixel's
transmittance is an exclusive cumulative product along its run of pairs, computed as a segmented
cumulative sum of ``log(1 - alpha)`` in float64. This reproduces the reference rasterizer's rules
exactly: ``alpha = min(0.99, o · exp(-½ dᵀ Σ⁻¹ d))``, skip ``alpha < 1/255``, and stop a pixel before
the Gaussian that would take its transmittance below 1e-4.

Memory is bounded: pairs are built in horizontal bands of rows holding at most ``max_pairs`` pairs, and
when gradients are needed each band is checkpointed, so neither pass holds all pairs at once.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .projection import ALPHA_MIN, Projected

ALPHA_MAX = 0.99
T_MIN = 1e-4
#: The stop test: a pixel stops before the Gaussian that would take its transmittance below T_MIN. Ties
#: are common (two opacity-1 Gaussians, clamped to 0.99, leave exactly 1e-4), so the test sits a relative
#: 1e-9 below T_MIN: the backends' different roundings of the same product then decide alike.
T_STOP = T_MIN * (1 - 1e-9)
DEFAULT_MAX_PAIRS = 4_000_000


def rasterize_pixels(
    projected: Projected,
    opacities: Tensor,
    colors: Tensor,
    width: int,
    height: int,
    max_pairs: int = DEFAULT_MAX_PAIRS,
    groups: Tensor | None = None,
    stats: dict | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians front to back.

    opacities: (N,) in [0, 1]. colors: (C, N, D). groups: optional (N,) integers; every Gaussian of a lower
    group is composited in front of every one of a higher group, whatever their depths.
    stats: see ``rasterize`` (filled by the backward pass, per pair: the reference for the compiled
    backend's statistics).
    Returns accumulated colour (C, H, W, D), alpha (C, H, W, 1) and alpha-weighted depth (C, H, W, 1),
    all without a background.
    """
    n_cams, n = projected.depths.shape
    d = colors.shape[-1]
    n_pix = n_cams * height * width
    dtype = projected.means2d.dtype
    device = projected.means2d.device

    visible = projected.visible.reshape(-1)
    flat = visible.nonzero().squeeze(1)
    out_color = torch.zeros(n_pix, d, dtype=dtype, device=device)
    out_alpha = torch.zeros(n_pix, dtype=dtype, device=device)
    out_depth = torch.zeros(n_pix, dtype=dtype, device=device)
    sink = None
    if stats is not None:  # per (camera, Gaussian): Σ|∂L/∂mean2d| per axis, Σ weight; filled by backward
        sink = (torch.zeros(n_cams * n, 3, dtype=torch.float64, device=device), flat)
        stats["absgrad"] = sink[0].view(n_cams, n, 3)[..., :2]
        stats["weight"] = sink[0].view(n_cams, n, 3)[..., 2]
    if flat.numel() > 0:
        # one row per visible (camera, Gaussian): mean2d(2) conic(3) opacity, 1, depth, colour(D)
        table = torch.cat(
            [
                projected.means2d.reshape(-1, 2),
                projected.conics.reshape(-1, 3),
                opacities.expand(n_cams, n).reshape(-1, 1),
                torch.ones_like(projected.depths).reshape(-1, 1),
                projected.depths.reshape(-1, 1),
                colors.reshape(-1, d),
            ],
            1,
        ).index_select(0, flat)
        boxes = _pixel_boxes(
            table[:, :2].detach(),
            projected.radii.reshape(-1, 2).index_select(0, flat),
            flat // n,
            width,
            height,
        )
        depth_rank = torch.empty_like(flat)
        order = draw_order(table[:, 7].detach(), None if groups is None else groups[flat % n])
        depth_rank[order] = torch.arange(flat.numel(), device=device)
        needs_grad = torch.is_grad_enabled() and table.requires_grad
        geometry = table[:, :6].detach().contiguous()  # mean2d, conic, opacity: all the filter reads
        bands = _row_bands(boxes, height, max_pairs)
        for row_lo, row_hi in bands:
            pix, gid = _pairs(boxes, row_lo, row_hi, width, height)
            if pix.numel() == 0:
                continue
            pix, gid, pair_alpha = _drop_faint_and_sort(pix, gid, geometry, depth_rank, width, height)
            if pix.numel() == 0:
                continue
            if not needs_grad:  # inference: reuse the alphas the filter computed
                color, alpha, depth = _composite_values(pix, gid, pair_alpha, table[:, 6:].detach(), n_pix)
            elif len(bands) > 1:
                args = (pix, gid, table, width, height, n_pix, sink)
                color, alpha, depth = checkpoint(_composite, *args, use_reentrant=False)
            else:
                color, alpha, depth = _composite(pix, gid, table, width, height, n_pix, sink)
            out_color = out_color + color
            out_alpha = out_alpha + alpha
            out_depth = out_depth + depth
    shape = (n_cams, height, width)
    return out_color.reshape(*shape, d), out_alpha.reshape(*shape, 1), out_depth.reshape(*shape, 1)


def draw_order(depths: Tensor, groups: Tensor | None = None) -> Tensor:
    """Indices front to back: by group, then depth; ties keep the lower index in front (both backends)."""
    order = torch.argsort(depths, stable=True)
    if groups is not None:
        order = order[torch.argsort(groups[order], stable=True)]
    return order


def pixel_boxes(means2d: Tensor, radii: Tensor, keep: Tensor, width: int, height: int) -> Tensor:
    """(G, 4) int64 first col, last col, first row, last row whose pixel centres each Gaussian's box
    covers (last < first when empty or not ``keep``); the pixels a Gaussian can reach with alpha ≥ 1/255."""
    r = radii.to(means2d.dtype)
    lo = torch.ceil(means2d - r - 0.5)
    hi = torch.floor(means2d + r - 0.5)
    x0 = lo[:, 0].clamp(0, width - 1).long()
    x1 = hi[:, 0].clamp(-1, width - 1).long()
    y0 = lo[:, 1].clamp(0, height - 1).long()
    y1 = hi[:, 1].clamp(-1, height - 1).long()
    x1 = torch.where(keep, x1, x0 - 1)
    return torch.stack([x0, x1, y0, y1], -1)


def _pixel_boxes(means2d: Tensor, radii: Tensor, cam: Tensor, width: int, height: int) -> Tensor:
    """(G, 5) int64: camera, first col, last col, first row, last row whose pixel centres the box covers."""
    keep = torch.ones(means2d.shape[0], dtype=torch.bool, device=means2d.device)
    return torch.cat([cam[:, None], pixel_boxes(means2d, radii, keep, width, height)], -1)


def _row_bands(boxes: Tensor, height: int, max_pairs: int) -> list[tuple[int, int]]:
    """Split the rows so that each band pairs at most about ``max_pairs`` pixel–Gaussian pairs."""
    widths = (boxes[:, 2] - boxes[:, 1] + 1).clamp(min=0)
    rows = torch.zeros(height + 1, dtype=torch.int64, device=boxes.device)
    y0, y1 = boxes[:, 3], boxes[:, 4]
    ok = y1 >= y0
    rows.index_add_(0, y0[ok], widths[ok])
    rows.index_add_(0, y1[ok] + 1, -widths[ok])
    per_row = torch.cumsum(rows[:-1], 0).tolist()  # pairs on each row
    bands, start, acc = [], 0, 0
    for r, cnt in enumerate(per_row):
        if acc > 0 and acc + cnt > max_pairs:
            bands.append((start, r))
            start, acc = r, 0
        acc += cnt
    bands.append((start, height))
    return bands


def _pairs(boxes: Tensor, row_lo: int, row_hi: int, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Flat pixel ids and Gaussian ids of every pixel of every box inside rows [row_lo, row_hi)."""
    cam, x0, x1, y0, y1 = boxes.unbind(-1)
    y0 = y0.clamp(min=row_lo)
    y1 = y1.clamp(max=row_hi - 1)
    w = (x1 - x0 + 1).clamp(min=0)
    h = (y1 - y0 + 1).clamp(min=0)
    counts = w * h
    total = int(counts.sum())
    if total == 0:
        empty = torch.empty(0, dtype=torch.int64, device=boxes.device)
        return empty, empty

    def spread(values: Tensor) -> Tensor:  # each box's value, repeated for each of its pixels
        return torch.repeat_interleave(values, counts, output_size=total)

    gid = spread(torch.arange(boxes.shape[0], device=boxes.device))
    local = torch.arange(total, device=boxes.device) - spread(torch.cumsum(counts, 0) - counts)
    wg = spread(w)
    row = local // wg
    pix = spread((cam * height + y0) * width + x0) + row * width + (local - row * wg)
    return pix, gid


def _pair_alpha(pix: Tensor, packed: Tensor, width: int, height: int) -> tuple[Tensor, Tensor]:
    """Alpha and Mahalanobis half-distance of each pair; ``packed`` holds the pair's Gaussian row."""
    px = (pix % width).to(packed.dtype) + 0.5
    py = ((pix // width) % height).to(packed.dtype) + 0.5
    dx, dy = px - packed[:, 0], py - packed[:, 1]
    sigma = 0.5 * (packed[:, 2] * dx * dx + packed[:, 4] * dy * dy) + packed[:, 3] * dx * dy
    alpha = torch.clamp(packed[:, 5] * torch.exp(-sigma), max=ALPHA_MAX)
    return alpha, sigma


@torch.no_grad()
def _drop_faint_and_sort(
    pix: Tensor, gid: Tensor, geometry: Tensor, depth_rank: Tensor, width: int, height: int
):
    """Keep the pairs with alpha >= 1/255, sorted by (pixel, depth); returns their alphas too."""
    alpha, sigma = _pair_alpha(pix, geometry.index_select(0, gid), width, height)
    keep = ((sigma >= 0) & (alpha >= ALPHA_MIN)).nonzero().squeeze(1)
    pix, gid, alpha = pix.index_select(0, keep), gid.index_select(0, keep), alpha.index_select(0, keep)
    order = torch.argsort(pix * depth_rank.numel() + depth_rank.index_select(0, gid))
    return pix.index_select(0, order), gid.index_select(0, order), alpha.index_select(0, order)


def _transmittance(pix: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """Per pair: transmittance in front of it (zero once its pixel is done, T < 1e-4), and each pair's
    index of the last pair of its pixel. Pairs sorted by (pixel, depth)."""
    log_keep = torch.log1p(-alpha).to(torch.float64)
    exclusive = torch.cumsum(log_keep, 0) - log_keep
    first, last = _runs(pix)
    log_t = exclusive - exclusive.index_select(0, first)
    alive = (log_t + log_keep) >= torch.log(torch.tensor(T_STOP, dtype=torch.float64))
    return torch.exp(log_t).to(alpha.dtype) * alive, last


@torch.no_grad()
def _composite_values(pix: Tensor, gid: Tensor, alpha: Tensor, values: Tensor, n_pix: int):
    """Forward-only compositing from known pair alphas; ``values`` rows: 1, depth, colour (D)."""
    trans, _ = _transmittance(pix, alpha)
    acc = torch.zeros(n_pix, values.shape[1], dtype=values.dtype, device=values.device)
    acc.index_add_(0, pix, values.index_select(0, gid) * (alpha * trans)[:, None])
    return acc[:, 2:], acc[:, 0], acc[:, 1]


def _composite(pix: Tensor, gid: Tensor, table: Tensor, width: int, height: int, n_pix: int, sink=None):
    acc = _Composite.apply(pix, gid, table, width, height, n_pix, sink)
    return acc[:, 2:], acc[:, 0], acc[:, 1]


def _runs(pix: Tensor) -> tuple[Tensor, Tensor]:
    """For pairs sorted by pixel: index of the first and of the last pair of each pair's pixel."""
    start = torch.ones_like(pix, dtype=torch.bool)
    start[1:] = pix[1:] != pix[:-1]
    run_id = torch.cumsum(start, 0) - 1
    starts = start.nonzero().squeeze(1)
    ends = torch.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = pix.numel() - 1
    return starts.index_select(0, run_id), ends.index_select(0, run_id)


class _Composite(torch.autograd.Function):
    """Front-to-back compositing of pairs sorted by (pixel, depth), with an analytic backward.

    ``table`` has one row per visible Gaussian: mean2d x, y; conic a, b, c; opacity; 1; depth; colour (D).
    Returns (n_pix, D + 2): accumulated alpha, alpha-weighted depth and colour (the weighted sums of the
    table's last D + 2 columns). ``sink``: None, or (sums (C·N, 3), the table rows' flat indices), to which
    the backward pass adds each pair's |∂/∂mean2d x|, |∂/∂mean2d y| and weight.
    """

    @staticmethod
    def forward(ctx, pix, gid, table, width, height, n_pix, sink=None):
        packed = table.index_select(0, gid)
        px = (pix % width).to(table.dtype) + 0.5
        py = ((pix // width) % height).to(table.dtype) + 0.5
        dx, dy = px - packed[:, 0], py - packed[:, 1]
        sigma = 0.5 * (packed[:, 2] * dx * dx + packed[:, 4] * dy * dy) + packed[:, 3] * dx * dy
        raw = packed[:, 5] * torch.exp(-sigma)
        alpha = raw.clamp(max=ALPHA_MAX)
        trans, last = _transmittance(pix, alpha)
        weight = alpha * trans
        acc = torch.zeros(n_pix, table.shape[1] - 6, dtype=table.dtype, device=table.device)
        acc.index_add_(0, pix, packed[:, 6:] * weight[:, None])
        ctx.save_for_backward(pix, gid, packed, dx, dy, raw, alpha, trans, last)
        ctx.n_rows = table.shape[0]
        ctx.sink = sink
        return acc

    @staticmethod
    def backward(ctx, grad_acc):
        pix, gid, packed, dx, dy, raw, alpha, trans, last = ctx.saved_tensors
        weight = alpha * trans
        go = grad_acc.index_select(0, pix)  # (M, D + 2)
        g_weight = (go * packed[:, 6:]).sum(1)
        # d weight_k / d alpha_i for later pairs k of the same pixel: -weight_k / (1 - alpha_i)
        later = (g_weight * weight).to(torch.float64)
        inclusive = torch.cumsum(later, 0)
        behind = (inclusive.index_select(0, last) - inclusive).to(alpha.dtype)
        g_alpha = g_weight * trans - behind / (1.0 - alpha)
        g_alpha = g_alpha * (raw <= ALPHA_MAX)
        gauss = raw / packed[:, 5].clamp(min=1e-30)  # exp(-sigma)
        g_opacity = g_alpha * gauss
        g_sigma = -g_alpha * raw
        a, b, c = packed[:, 2], packed[:, 3], packed[:, 4]
        grads = torch.empty_like(packed)
        grads[:, 0] = -g_sigma * (a * dx + b * dy)
        grads[:, 1] = -g_sigma * (c * dy + b * dx)
        grads[:, 2] = 0.5 * g_sigma * dx * dx
        grads[:, 3] = g_sigma * dx * dy
        grads[:, 4] = 0.5 * g_sigma * dy * dy
        grads[:, 5] = g_opacity
        grads[:, 6:] = go * weight[:, None]  # the constant column's gradient is never used
        g_table = torch.zeros(ctx.n_rows, grads.shape[1], dtype=grads.dtype, device=grads.device)
        g_table.index_add_(0, gid, grads)
        if ctx.sink is not None:
            sums, flat = ctx.sink
            per_pair = torch.stack([grads[:, 0].abs(), grads[:, 1].abs(), weight], 1).to(sums.dtype)
            sums.index_add_(0, flat.index_select(0, gid), per_pair)
        return None, None, g_table, None, None, None, None
