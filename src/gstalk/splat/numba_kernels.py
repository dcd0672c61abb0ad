"""The compiled kernels of the numba backend: binning, tile compositing forward and backward, projection.

All work on NumPy arrays in the compositing precision (float32 or float64, "lanes" below) and release
the GIL; :mod:`.numba_backend` prepares their inputs and runs them on gstalk's worker threads.

**Tiles and lanes.** The image is cut into tiles 8 pixels wide and 32 high. Within a tile, each
Gaussian of the tile's front-to-back list covers a run of whole tile rows (its pixel box's rows), so its
pixels form one contiguous run of ``8 · rows`` lanes of the tile's row-major arrays. Each step over
those lanes is a plain loop that LLVM turns into SIMD code (a tile row is one 8-lane float32 vector on
AVX2); lanes outside the Gaussian's box columns are masked, not skipped. Narrow tiles keep the masked
lanes of small Gaussians few: 25% fewer lanes than 16 × 16 tiles for a 512² head, for 10% more entries.
The steps of one Gaussian in one tile:

1. ``_alphas``: σ, ``exp(-σ)`` and alpha per lane, and whether the pair passes (box column, σ ≥ 0,
   alpha ≥ 1/255): the torch backend's rules, σ in its operation order and precision.
2. ``_blend``: each passing lane's weight ``alpha · T`` and new transmittance; a pixel whose
   transmittance would fall below T_STOP stops (its transmittance T kept as -T, so no later pair uses it).
3. forward: the weights times each value (colour channels, 1, depth) added to the tile's sums.
   backward (back to front, from each pixel's final transmittance and last pair): the transmittance in
   front of the pair (``_unblend``), each lane's ``g · v``, and reductions over the lanes for the
   Gaussian's gradients (``_entry_gradients``).

The forward and backward kernels call the same ``_alphas``, compiled without fast-math flags (and the
exponential's fused multiply-adds explicit), so both passes find the same pairs bit for bit. Only the
gradient reductions may reassociate (their order is free; the reference's index_add has none either).

Loops over lanes index a slice with the loop variable alone: numba then omits negative-index wraparound
and LLVM vectorises. A loop writes few arrays, so LLVM's run-time alias checks stay under its limit.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

#: tile width and height in pixels
TILE_W, TILE_H = 8, 32
AREA = TILE_W * TILE_H
#: a Gaussian's fixed cost in a tile (setting up its steps), in units of one tile row of lane work
ENTRY_COST = 4


@intrinsic
def _fma(typingctx, a, b, c):
    """a · b + c rounded once (llvm.fma): explicit, so it never depends on what the optimiser contracts."""
    if not (a == b == c and isinstance(a, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, a, a), codegen


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float whose IEEE bits are ``bits`` (int32 → float32, int64 → float64)."""
    if bits == types.int32:
        out = types.float32
    elif bits == types.int64:
        out = types.float64
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(out))

    return out(bits), codegen


def cast_like(x, like):
    """x converted to the float type of ``like``."""
    raise NotImplementedError("compiled only")


@overload(cast_like, inline="always")
def _cast_like_impl(x, like):
    if like == types.float32:
        return lambda x, like: np.float32(x)
    if like == types.float64:
        return lambda x, like: np.float64(x)
    return None


def exp_neg(x):
    """exp(-x) for x >= 0 in x's precision: float32 to 1 ulp, float64 to 2e-16 relative."""
    raise NotImplementedError("compiled only")


@overload(exp_neg, inline="always")
def _exp_neg_impl(x):
    """Cody-Waite reduction x = k ln2 − r (|r| ≤ ln2/2), a polynomial for e^r in Estrin's scheme (short
    dependency chains) with explicit fused multiply-adds, and 2^-k built from its exponent bits: straight
    code with no table or call, so it vectorises. x is clamped where the result is negligible."""
    if x == types.float32:
        f, i = np.float32, np.int32

        def exp_neg_f32(x):
            xc = min(x, f(80.0))
            k = i(_fma(xc, f(1.4426950408889634), f(0.5)))
            fk = f(k)
            r = _fma(fk, f(-2.12194440e-4), _fma(fk, f(0.693359375), -xc))  # ln2 in two parts
            r2 = r * r
            p01 = _fma(f(1.0000000377274485), r, f(0.9999999999595485))  # near-minimax, degree 6
            p23 = _fma(f(0.1666641547723567), r, f(0.5000000107749408))
            p46 = _fma(f(0.0013948580823962865), r2, _fma(f(0.00837512889045229), r, f(0.04166621827432466)))
            p = _fma(p46, r2 * r2, _fma(p23, r2, p01))
            return p * _float_from_bits(i((127 - k) << 23))

        return exp_neg_f32
    if x == types.float64:
        f, i = np.float64, np.int64

        def exp_neg_f64(x):
            xc = min(x, 700.0)
            k = i(_fma(xc, 1.4426950408889634, 0.5))
            fk = f(k)
            r = _fma(fk, 1.90821492927058770002e-10, _fma(fk, 6.93147180369123816490e-01, -xc))
            r2 = r * r
            r4 = r2 * r2
            q0 = _fma(_fma(1 / 6, r, 0.5), r2, _fma(1.0, r, 1.0))  # Taylor to degree 13
            q1 = _fma(_fma(1 / 5040, r, 1 / 720), r2, _fma(1 / 120, r, 1 / 24))
            q2 = _fma(_fma(1 / 39916800, r, 1 / 3628800), r2, _fma(1 / 362880, r, 1 / 40320))
            q3 = _fma(1 / 6227020800, r, 1 / 479001600)
            p = _fma(_fma(q3, r4, q2), r4 * r4, _fma(q1, r4, q0))
            return p * _float_from_bits(i((1023 - k) << 52))

        return exp_neg_f64
    return None


@njit(cache=True, nogil=True)
def pixel_boxes(means2d, radii, width, height, half):
    """(N, 4) int32 first col, last col, first row, last row whose pixel centres each Gaussian's box
    covers (last < first when empty or culled): ``torch_backend.pixel_boxes``, in means2d's precision."""
    boxes = np.empty((means2d.shape[0], 4), np.int32)
    for g in range(means2d.shape[0]):
        mx, my = means2d[g, 0], means2d[g, 1]
        rx, ry = cast_like(radii[g, 0], half), cast_like(radii[g, 1], half)  # as torch: radii.to(dtype)
        x0 = min(max(np.ceil(mx - rx - half), 0), width - 1)
        x1 = min(max(np.floor(mx + rx - half), -1), width - 1)
        y0 = min(max(np.ceil(my - ry - half), 0), height - 1)
        y1 = min(max(np.floor(my + ry - half), -1), height - 1)
        boxes[g, 0], boxes[g, 1], boxes[g, 2], boxes[g, 3] = x0, x1, y0, y1
        if rx <= 0 or ry <= 0:  # culled
            boxes[g, 1] = boxes[g, 0] - 1
    return boxes


@njit(cache=True, nogil=True)
def draw_order(depths, groups):
    """Indices front to back: by group (when ``groups`` is not empty), then depth; ties keep the lower
    index in front, as ``torch_backend.draw_order``'s stable sorts. An LSD radix sort on the depths' bits
    (16 bits a pass) and a counting sort by group: stable, and O(N)."""
    n = depths.shape[0]
    if n < 4096:  # the radix passes' 65536-bucket histograms cost more than a merge sort
        order = np.argsort(depths + depths.dtype.type(0), kind="mergesort")  # + 0 makes -0.0 equal 0.0
        if groups.shape[0] > 0:
            order = order[np.argsort(groups[order], kind="mergesort")]
        return order
    bits = (depths.astype(np.float64) + 0.0).view(np.uint64)  # exact for float32; -0.0 becomes +0.0
    top = np.uint64(1) << np.uint64(63)
    keys = np.empty(n, np.uint64)
    for i in range(n):  # IEEE bits to an unsigned key of the same order: flip negatives, set positives' sign
        b = bits[i]
        keys[i] = ~b if b & top else b | top
    order = np.arange(n)
    scratch = np.empty(n, np.int64)
    counts = np.empty(65537, np.int64)
    for shift in range(0, 64, 16):
        counts[:] = 0
        for i in range(n):
            counts[((keys[i] >> np.uint64(shift)) & np.uint64(0xFFFF)) + np.uint64(1)] += 1
        if counts.max() == n:  # one digit throughout (e.g. the low bits of float32 depths): nothing to do
            continue
        for d in range(65536):
            counts[d + 1] += counts[d]
        for k in range(n):
            i = order[k]
            digit = (keys[i] >> np.uint64(shift)) & np.uint64(0xFFFF)
            scratch[counts[digit]] = i
            counts[digit] += 1
        order, scratch = scratch, order
    if groups.shape[0] == 0:
        return order
    low, high = groups.min(), groups.max()
    fill = np.zeros(high - low + 2, np.int64)
    for i in range(n):
        fill[groups[i] - low + 1] += 1
    for d in range(high - low + 1):
        fill[d + 1] += fill[d]
    for k in range(n):
        i = order[k]
        scratch[fill[groups[i] - low]] = i
        fill[groups[i] - low] += 1
    return scratch


#: slack added to the ellipse's threshold when binning (σ units): the culling must keep every pair the
#: compositing could use, whatever the float32 rounding of σ there
CULL_SLACK = 0.05


@njit(cache=True, nogil=True, inline="always")
def _band_columns(mx, my, ca, cb, cc, det, tau, q, ya, yb):
    """The x range [left, right] of the ellipse ``σ(x, y) ≤ tau`` (σ = ½(ca dx² + cc dy²) + cb dx dy,
    dx = x − mx, dy = y − my, det = ca·cc − cb² > 0) over ya ≤ y ≤ yb, in float64; left > right when the
    ellipse misses the band. ``q`` = √(2τ / (cc·det)).

    The ellipse's rightmost point lies at dy = −cb·q, its leftmost at dy = cb·q; over a band, the extreme
    x is at the band's y nearest to it, where the ellipse spans dx = (−cb·dy ± √(2·ca·τ − det·dy²)) / ca."""
    da, db = ya - my, yb - my
    dy = min(max(-cb * q, da), db)
    room = 2.0 * ca * tau - det * dy * dy
    if room < 0.0:
        return np.inf, -np.inf
    right = mx + (-cb * dy + np.sqrt(room)) / ca
    dy = min(max(cb * q, da), db)
    room = max(2.0 * ca * tau - det * dy * dy, 0.0)
    left = mx + (-cb * dy - np.sqrt(room)) / ca
    return left, right


@njit(cache=True, nogil=True)
def first_bands(boxes, height):
    """(N + 1,) int64 offsets: Gaussian g's tile-row bands are ``first[g] .. first[g + 1] - 1`` (none
    when its box is empty), in the (bands, 2) arrays :func:`band_tiles` fills."""
    n = boxes.shape[0]
    first = np.zeros(n + 1, np.int64)
    for g in range(n):
        empty = boxes[g, 1] < boxes[g, 0] or boxes[g, 3] < boxes[g, 2]
        first[g + 1] = first[g] + (0 if empty else boxes[g, 3] // TILE_H - boxes[g, 2] // TILE_H + 1)
    return first


@njit(cache=True, nogil=True)
def band_tiles(lo, hi, boxes, first, width, means2d, conics, opacities, alpha_min, band_cols, counts, cost):
    """For Gaussians lo..hi-1: in each tile-row band of its box, the tile columns its alpha ellipse
    (``alpha >= alpha_min``, widened by CULL_SLACK) reaches, into ``band_cols`` (bands, 2) (first, last;
    last < first when none); and for each tile reached, one more entry in ``counts`` (tiles,) and its
    estimated cost (rows of lane work plus ENTRY_COST) in ``cost`` (tiles,). A conic that is not an
    ellipse keeps its whole box."""
    tiles_x = (width + TILE_W - 1) // TILE_W
    for g in range(lo, hi):
        if first[g + 1] == first[g]:
            continue
        x0, x1, y0, y1 = boxes[g, 0], boxes[g, 1], boxes[g, 2], boxes[g, 3]
        mx, my = np.float64(means2d[g, 0]), np.float64(means2d[g, 1])
        ca, cb, cc = np.float64(conics[g, 0]), np.float64(conics[g, 1]), np.float64(conics[g, 2])
        det = ca * cc - cb * cb
        tau = np.log(max(np.float64(opacities[g]), alpha_min) / alpha_min) + CULL_SLACK
        ellipse = ca > 0.0 and cc > 0.0 and det > 0.0 and tau < 1e30 and x1 // TILE_W > x0 // TILE_W
        q = np.sqrt(2.0 * tau / (cc * det)) if ellipse else 0.0
        for ty in range(y0 // TILE_H, y1 // TILE_H + 1):
            r0, r1 = max(y0, ty * TILE_H), min(y1, ty * TILE_H + TILE_H - 1)
            c0, c1 = x0, x1
            if ellipse:
                left, right = _band_columns(mx, my, ca, cb, cc, det, tau, q, r0 + 0.5, r1 + 0.5)
                if left > x0 + 0.5:
                    c0 = x1 + 1 if left > x1 + 0.5 else int(np.ceil(left - 0.5))
                if right < x1 + 0.5:
                    c1 = x0 - 1 if right < x0 + 0.5 else int(np.floor(right - 0.5))
            band = first[g] + ty - y0 // TILE_H
            if c1 < c0:
                band_cols[band, 0], band_cols[band, 1] = 0, -1
                continue
            band_cols[band, 0], band_cols[band, 1] = c0 // TILE_W, c1 // TILE_W
            for tx in range(c0 // TILE_W, c1 // TILE_W + 1):
                counts[ty * tiles_x + tx] += 1
                cost[ty * tiles_x + tx] += r1 - r0 + 1 + ENTRY_COST


@njit(cache=True, nogil=True)
def fill_tiles(order, boxes, first, band_cols, counts, width):
    """Per-tile lists of Gaussian ids, front to back (``order``: ids front to back), from
    :func:`band_tiles`' columns and entry counts: ``start`` (tiles + 1,) int64 offsets into ``ids``
    (entries,) int32."""
    tiles_x = (width + TILE_W - 1) // TILE_W
    start = np.zeros(counts.shape[0] + 1, np.int64)
    for t in range(counts.shape[0]):
        start[t + 1] = start[t] + counts[t]
    fill = start[:-1].copy()
    ids = np.empty(start[-1], np.int32)
    for k in range(order.shape[0]):
        g = order[k]
        ty0 = boxes[g, 2] // TILE_H
        for band in range(first[g], first[g + 1]):
            row = (ty0 + band - first[g]) * tiles_x
            for tx in range(band_cols[band, 0], band_cols[band, 1] + 1):
                ids[fill[row + tx]] = g
                fill[row + tx] += 1
    return start, ids


@njit(cache=True, nogil=True)
def bin_tiles(boxes, order, width, height, means2d, conics, opacities, alpha_min):
    """Per-tile lists of Gaussian ids, front to back, and each tile's estimated cost, on one thread
    (``numba_backend`` runs :func:`band_tiles` on the workers).

    boxes (N, 4) int32: first col, last col, first row, last row of the pixels a Gaussian covers (empty
    when last < first); order (N,): ids front to back; means2d (N, 2), conics (N, 3) and opacities (N,)
    as the compositing reads them. A Gaussian is listed in the tiles of its box that its alpha ellipse
    (where ``alpha >= alpha_min``) reaches, row band by row band of tiles (the idea of Speedy-Splat's
    AccuTile): a tile it misses would find ``alpha < alpha_min`` at every pixel, so the images and
    gradients are those of the whole box, with fewer entries for rotated and elongated Gaussians.

    Returns ``start`` (tiles + 1,) int64 offsets into ``ids`` (entries,) int32, and ``cost`` (tiles,)
    int64 in tile rows of lane work."""
    n_tiles = ((width + TILE_W - 1) // TILE_W) * ((height + TILE_H - 1) // TILE_H)
    first = first_bands(boxes, height)
    band_cols = np.empty((first[-1], 2), np.int32)
    counts = np.zeros(n_tiles, np.int64)
    cost = np.ones(n_tiles, np.int64)  # an empty tile is still written
    band_tiles(0, boxes.shape[0], boxes, first, width, means2d, conics, opacities, alpha_min, band_cols,
               counts, cost)  # fmt: skip
    start, ids = fill_tiles(order, boxes, first, band_cols, counts, width)
    return start, ids, cost


@njit(cache=True, nogil=True)
def _tile_lanes(xs, ys, tx0, ty0, lane_x, lane_y):
    """Pixel-centre coordinates of the tile's 256 lanes, row-major."""
    for p in range(AREA):
        lane_x[p] = xs[tx0 + (p & (TILE_W - 1))]
        lane_y[p] = ys[ty0 + p // TILE_W]


@njit(cache=True, nogil=True, inline="always")
def _alphas(lx, ly, mx, my, ca, cb, cc, o, x_lo, x_hi, consts, la, lg):
    """Step 1 over one run of lanes: ``la`` gets alpha where the pair passes, else 0; ``lg`` exp(-σ).
    ``x_lo``, ``x_hi``: the pixel centres of the box's first and last column (lanes outside are masked)."""
    half, alpha_min, alpha_max, zero = consts[0], consts[1], consts[2], consts[5]
    for j in range(la.shape[0]):
        x = lx[j]
        dx = x - mx
        dy = ly[j] - my
        sigma = half * (ca * dx * dx + cc * dy * dy) + cb * dx * dy  # the torch backend's order
        gauss = exp_neg(max(sigma, zero))
        alpha = min(o * gauss, alpha_max)
        ok = (x >= x_lo) & (x <= x_hi) & (sigma >= zero) & (alpha >= alpha_min)
        la[j] = alpha if ok else zero
        lg[j] = gauss


@njit(cache=True, nogil=True, inline="always")
def _blend(la, trans, lw, last, e, consts):
    """Step 2, front to back: weights ``lw`` (0 where unused) and the new transmittances; ``last`` gets
    entry ``e`` where the pair is used. A pixel whose transmittance would fall below T_STOP stops before
    this pair: its transmittance T is kept as -T, so no later pair touches it. Returns how many stopped."""
    one, t_stop, zero = consts[3], consts[4], consts[5]
    n_done = 0
    for j in range(la.shape[0]):
        alpha = la[j]
        tr = trans[j]
        after = tr * (one - alpha)
        ok = (alpha > zero) & (tr > zero)
        dead = ok & (after <= t_stop)
        use = ok & (after > t_stop)
        n_done += dead
        lw[j] = alpha * tr if use else zero
        trans[j] = -tr if dead else (after if use else tr)
        last[j] = e if use else last[j]
    return n_done


@njit(cache=True, nogil=True, inline="always")
def _live_rows(r0, r1, stopped, row_width):
    """Tile rows r0..r1 less those at either end where every pixel has stopped (``stopped[r]`` of
    ``row_width``): no pair there is used, so the lanes need not be computed (the images and gradients
    are unchanged). Returns (r0, r1), r1 < r0 when none is left."""
    while r0 <= r1 and stopped[r0] == row_width:
        r0 += 1
    while r1 >= r0 and stopped[r1] == row_width:
        r1 -= 1
    return r0, r1


@njit(cache=True, nogil=True, inline="always")
def _used_rows(r0, r1, row_last, e):
    """Tile rows r0..r1 less those at either end none of whose pixels used an entry as late as ``e``
    (``row_last[r]``: the last entry a pixel of row r used): the backward pass's :func:`_live_rows`."""
    while r0 <= r1 and row_last[r0] < e:
        r0 += 1
    while r1 >= r0 and row_last[r1] < e:
        r1 -= 1
    return r0, r1


@njit(cache=True, nogil=True, inline="always")
def _count_stopped(trans, r0, r1, stopped):
    """Recount the stopped pixels (transmittance kept as −T < 0) of tile rows r0..r1."""
    for r in range(r0, r1 + 1):
        k = 0
        for j in range(r * TILE_W, (r + 1) * TILE_W):
            k += trans[j] < 0
        stopped[r] = k


@njit(cache=True, nogil=True, inline="always")
def _add_scaled(acc, lw, v):
    for j in range(acc.shape[0]):
        acc[j] += lw[j] * v


@njit(cache=True, nogil=True, error_model="numpy")
def forward_tiles(tiles, start, ids, boxes, xs, ys, means2d, conics, opacities, depths, colors, consts,
                  out_color, out_alpha, out_depth, out_trans, out_last, background):  # fmt: skip
    """Composite the given tiles. Outputs (H, W, D), (H, W), (H, W) are fully written for those tiles.

    ``out_trans`` (H, W) and ``out_last`` (H, W) int32, unless empty: each pixel's final transmittance
    (after its last pair) and the tile entry of its last pair (-1: none), which the backward pass starts
    from. ``background``: empty to output the raw sums (colour, alpha, alpha-weighted depth); else an
    (H, W, D) array (strides may be 0) to output the image over it, alpha, and the depth divided by alpha
    (``rasterize``'s final values in one pass). An empty ``out_depth`` (only without ``out_trans``) skips
    the depth altogether."""
    height, width = out_alpha.shape
    tiles_x = (width + TILE_W - 1) // TILE_W
    d = colors.shape[1]
    one = consts[3]
    with_depth = out_depth.shape[0] > 0
    lane_x, lane_y = np.empty(AREA, consts.dtype), np.empty(AREA, consts.dtype)
    trans = np.empty(AREA, consts.dtype)
    last = np.empty(AREA, np.int32)
    la, lg, lw = np.empty(AREA, consts.dtype), np.empty(AREA, consts.dtype), np.empty(AREA, consts.dtype)
    acc = np.empty((d + 2) * AREA, consts.dtype)
    stopped = np.empty(TILE_H, np.int32)  # per tile row: its pixels that have stopped
    for t in tiles:
        ty = t // tiles_x
        tx0, ty0 = (t - ty * tiles_x) * TILE_W, ty * TILE_H
        tx1, ty1 = min(tx0 + TILE_W, width) - 1, min(ty0 + TILE_H, height) - 1
        if start[t + 1] == start[t]:
            _write_empty(tx0, tx1, ty0, ty1, out_color, out_alpha, out_depth, out_trans, out_last, background)
            continue
        _tile_lanes(xs, ys, tx0, ty0, lane_x, lane_y)
        trans[:] = one
        last[:] = -1
        acc[:] = 0
        stopped[:] = 0
        row_width = tx1 - tx0 + 1
        n_left = row_width * (ty1 - ty0 + 1)
        for e in range(start[t], start[t + 1]):
            g = ids[e]
            r0, r1 = _live_rows(max(boxes[g, 2], ty0) - ty0, min(boxes[g, 3], ty1) - ty0, stopped, row_width)
            if r1 < r0:  # every row it covers has stopped
                continue
            p0, p1 = r0 * TILE_W, (r1 + 1) * TILE_W
            n = p1 - p0
            lo, hi = xs[max(boxes[g, 0], tx0)], xs[min(boxes[g, 1], tx1)]  # box columns in the tile
            mx, my, o = means2d[g, 0], means2d[g, 1], opacities[g]
            ca, cb, cc = conics[g, 0], conics[g, 1], conics[g, 2]
            _alphas(lane_x[p0:p1], lane_y[p0:p1], mx, my, ca, cb, cc, o, lo, hi, consts, la[:n], lg[:n])
            n_done = _blend(la[:n], trans[p0:p1], lw[:n], last[p0:p1], e - start[t], consts)
            if n_done:
                n_left -= n_done
                _count_stopped(trans, r0, r1, stopped)
            for k in range(d):
                _add_scaled(acc[k * AREA + p0 : k * AREA + p1], lw[:n], colors[g, k])
            _add_scaled(acc[d * AREA + p0 : d * AREA + p1], lw[:n], one)
            if with_depth:
                _add_scaled(acc[(d + 1) * AREA + p0 : (d + 1) * AREA + p1], lw[:n], depths[g])
            if n_left == 0:
                break
        _write_tile(
            acc, trans, last, tx0, tx1, ty0, ty1, d, consts, out_color, out_alpha, out_depth, out_trans,
            out_last, background,
        )  # fmt: skip


@njit(cache=True, nogil=True, inline="always")
def _write_empty(tx0, tx1, ty0, ty1, out_color, out_alpha, out_depth, out_trans, out_last, background):
    """A tile no Gaussian touches: the background (or 0), alpha and depth 0, transmittance 1."""
    d = out_color.shape[2]
    final = background.shape[0] > 0
    keep = out_trans.shape[0] > 0
    with_depth = out_depth.shape[0] > 0
    for py in range(ty0, ty1 + 1):
        for px in range(tx0, tx1 + 1):
            for k in range(d):
                out_color[py, px, k] = background[py, px, k] if final else 0
            out_alpha[py, px] = 0
            if with_depth:
                out_depth[py, px] = 0
            if keep:
                out_trans[py, px] = 1
                out_last[py, px] = -1


@njit(cache=True, nogil=True, inline="always")
def _write_tile(acc, trans, last, tx0, tx1, ty0, ty1, d, consts, out_color, out_alpha, out_depth, out_trans,
                out_last, background):  # fmt: skip
    keep = out_trans.shape[0] > 0
    final = background.shape[0] > 0
    with_depth = out_depth.shape[0] > 0
    one, tiny = consts[3], consts[6]
    for py in range(ty0, ty1 + 1):
        for px in range(tx0, tx1 + 1):
            p = (py - ty0) * TILE_W + px - tx0
            alpha = acc[d * AREA + p]
            depth = acc[(d + 1) * AREA + p]
            out_alpha[py, px] = alpha
            if final:  # the torch code's `color + (1 - alpha) * bg` and `depth / alpha.clamp(min=1e-10)`
                for k in range(d):
                    out_color[py, px, k] = acc[k * AREA + p] + (one - alpha) * background[py, px, k]
                if with_depth:
                    out_depth[py, px] = depth / max(alpha, tiny)
            else:
                for k in range(d):
                    out_color[py, px, k] = acc[k * AREA + p]
                if with_depth:
                    out_depth[py, px] = depth
            if keep:
                out_trans[py, px] = abs(trans[p])
                out_last[py, px] = last[p]


@njit(cache=True, nogil=True, inline="always")
def _unblend(la, trans, last, e, lt, consts):
    """Step 2, back to front: where pair ``e`` was used (alpha > 0 and e no later than the pixel's last
    pair), the transmittance in front of it, ``T / (1 - alpha)``, into ``lt`` and ``trans``; else 0."""
    one, zero = consts[3], consts[5]
    for j in range(la.shape[0]):
        alpha = la[j]
        use = (alpha > zero) & (e <= last[j])
        before = trans[j] / (one - alpha)
        lt[j] = before if use else zero
        trans[j] = before if use else trans[j]


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _entry_gradients(lx, ly, la, lg, lt, gv, behind, mx, my, o, consts):
    """One Gaussian's gradient sums over its lanes in one tile (reassociated: the order of a sum is free).

    Per used lane (T > 0): ``g_alpha = (g · v) T − behind / (1 − alpha)``, behind the sum of ``w (g · v)``
    of the pixel's later pairs, 0 where alpha was clamped; ``g_σ = −g_alpha · o · exp(-σ)``. Returns the
    sums of g_σ dx, g_σ dy, g_σ dx², g_σ dx dy, g_σ dy² and g_alpha · exp(-σ)."""
    alpha_max, one, zero = consts[2], consts[3], consts[5]
    s1 = s2 = s3 = s4 = s5 = s6 = zero
    for j in range(la.shape[0]):
        gauss = lg[j]
        raw = o * gauss
        tr = lt[j]
        g_alpha = gv[j] * tr - behind[j] / (one - la[j])
        g_alpha = g_alpha if (tr > zero) & (raw <= alpha_max) else zero
        g_sigma = -g_alpha * raw
        dx = lx[j] - mx
        dy = ly[j] - my
        s1 += g_sigma * dx
        s2 += g_sigma * dy
        s3 += g_sigma * dx * dx
        s4 += g_sigma * dx * dy
        s5 += g_sigma * dy * dy
        s6 += g_alpha * gauss
    return s1, s2, s3, s4, s5, s6


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _entry_stats(lx, ly, la, lg, lt, gv, behind, mx, my, o, ca, cb, cc, consts):
    """Densification statistics of one Gaussian over its lanes in one tile: the sums over pixels of
    |∂L/∂mean2d x| and |∂L/∂mean2d y| (each pixel's gradient on its own, so that opposite pulls do not
    cancel: AbsGS, Ye et al. 2024), and of its blending weight alpha · T (its contribution to the image).
    The per-pixel gradients are those :func:`_entry_gradients` sums."""
    alpha_max, one, zero = consts[2], consts[3], consts[5]
    ax = ay = w = zero
    for j in range(la.shape[0]):
        raw = o * lg[j]
        tr = lt[j]
        g_alpha = gv[j] * tr - behind[j] / (one - la[j])
        g_alpha = g_alpha if (tr > zero) & (raw <= alpha_max) else zero
        g_sigma = -g_alpha * raw
        dx = lx[j] - mx
        dy = ly[j] - my
        ax += abs(g_sigma * (ca * dx + cb * dy))
        ay += abs(g_sigma * (cc * dy + cb * dx))
        w += la[j] * tr
    return ax, ay, w


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _weighted_sum(g, la, lt, zero):
    """Σ g · w over the lanes, w = alpha · T (0 where unused, as T is)."""
    s = zero
    for j in range(g.shape[0]):
        s += g[j] * (la[j] * lt[j])
    return s


@njit(cache=True, nogil=True, inline="always")
def _add_behind(behind, la, lt, gv):
    for j in range(behind.shape[0]):
        behind[j] += la[j] * lt[j] * gv[j]


@njit(cache=True, nogil=True, error_model="numpy")
def backward_tiles(tiles, start, ids, boxes, xs, ys, means2d, conics, opacities, depths, colors, consts,
                   trans_final, last_entry, out_alpha, out_depth, background, g_color, g_alpha, g_depth,
                   entry_grads):  # fmt: skip
    """Per (tile, Gaussian) entry of the given tiles: gradients of mean2d x, y; conic a, b, c; opacity;
    depth; colour (D), into ``entry_grads`` (entries, 7 + D) float64 (unused entries: 0). When it has
    10 + D columns, the last three get :func:`_entry_stats`: Σ|∂L/∂mean2d x|, Σ|∂L/∂mean2d y| and the
    Gaussian's summed blending weight over the tile's pixels.

    ``trans_final``, ``last_entry``: what ``forward_tiles`` kept. With a ``background`` (not empty) the
    gradients are those of its final outputs (image over the background, alpha, depth divided by alpha,
    whose values ``out_alpha`` and ``out_depth`` are), else of the raw sums.

    Each tile walks its list back to front from each pixel's final transmittance and last pair (the
    reference 3DGS rasterizer's backward): the transmittance in front of a pair is the one behind it
    divided by ``1 - alpha``, and ``behind``, the sum of ``w (g · v)`` over later pairs, only grows, so
    nothing cancels."""
    height, width = g_alpha.shape
    tiles_x = (width + TILE_W - 1) // TILE_W
    d = colors.shape[1]
    zero, tiny = consts[5], consts[6]
    final = background.shape[0] > 0
    stats = entry_grads.shape[1] == 10 + d
    lane_x, lane_y = np.empty(AREA, consts.dtype), np.empty(AREA, consts.dtype)
    trans, behind = np.empty(AREA, consts.dtype), np.empty(AREA, consts.dtype)
    last = np.full(AREA, -1, np.int32)
    la, lg = np.empty(AREA, consts.dtype), np.empty(AREA, consts.dtype)
    lt, gv = np.empty(AREA, consts.dtype), np.empty(AREA, consts.dtype)
    gbuf = np.zeros((d + 2) * AREA, consts.dtype)  # per lane: g of colour (D), alpha, depth sums
    row_last = np.empty(TILE_H, np.int32)  # per tile row: the last entry any of its pixels used
    for t in tiles:
        ty = t // tiles_x
        tx0, ty0 = (t - ty * tiles_x) * TILE_W, ty * TILE_H
        tx1, ty1 = min(tx0 + TILE_W, width) - 1, min(ty0 + TILE_H, height) - 1
        _tile_lanes(xs, ys, tx0, ty0, lane_x, lane_y)
        last_used = -1
        row_last[:] = -1
        for py in range(ty0, ty1 + 1):
            for px in range(tx0, tx1 + 1):
                p = (py - ty0) * TILE_W + px - tx0
                ga, gd = g_alpha[py, px], g_depth[py, px]
                for k in range(d):
                    gbuf[k * AREA + p] = g_color[py, px, k]
                if final:  # back through image = colour + (1 - alpha) bg and depth = depth sum / alpha
                    alpha = out_alpha[py, px]
                    for k in range(d):
                        ga -= g_color[py, px, k] * background[py, px, k]
                    if alpha >= tiny:
                        ga -= gd * out_depth[py, px] / alpha
                    gd = gd / max(alpha, tiny)
                gbuf[d * AREA + p] = ga
                gbuf[(d + 1) * AREA + p] = gd
                trans[p] = trans_final[py, px]
                last[p] = last_entry[py, px]
                last_used = max(last_used, last_entry[py, px])
                row_last[py - ty0] = max(row_last[py - ty0], last_entry[py, px])
        behind[:] = zero
        entry_grads[start[t] + last_used + 1 : start[t + 1]] = 0
        for e in range(start[t] + last_used, start[t] - 1, -1):
            g = ids[e]
            r0, r1 = _used_rows(
                max(boxes[g, 2], ty0) - ty0, min(boxes[g, 3], ty1) - ty0, row_last, e - start[t]
            )
            if r1 < r0:  # every pixel of its rows stopped before it: it has no gradient here
                entry_grads[e] = 0
                continue
            p0, p1 = r0 * TILE_W, (r1 + 1) * TILE_W
            n = p1 - p0
            mx, my, o = means2d[g, 0], means2d[g, 1], opacities[g]
            ca, cb, cc = conics[g, 0], conics[g, 1], conics[g, 2]
            lx, ly = lane_x[p0:p1], lane_y[p0:p1]
            lo, hi = xs[max(boxes[g, 0], tx0)], xs[min(boxes[g, 1], tx1)]  # box columns in the tile
            _alphas(lx, ly, mx, my, ca, cb, cc, o, lo, hi, consts, la[:n], lg[:n])
            _unblend(la[:n], trans[p0:p1], last[p0:p1], e - start[t], lt[:n], consts)
            _gv(gbuf, p0, p1, colors, g, depths[g], d, gv[:n])
            s1, s2, s3, s4, s5, s6 = _entry_gradients(
                lx, ly, la[:n], lg[:n], lt[:n], gv[:n], behind[p0:p1], mx, my, o, consts
            )
            if stats:
                ax, ay, w = _entry_stats(
                    lx, ly, la[:n], lg[:n], lt[:n], gv[:n], behind[p0:p1], mx, my, o, ca, cb, cc, consts
                )
                entry_grads[e, 7 + d], entry_grads[e, 8 + d], entry_grads[e, 9 + d] = ax, ay, w
            _add_behind(behind[p0:p1], la[:n], lt[:n], gv[:n])
            entry_grads[e, 0] = -(ca * s1 + cb * s2)
            entry_grads[e, 1] = -(cc * s2 + cb * s1)
            entry_grads[e, 2] = 0.5 * s3
            entry_grads[e, 3] = s4
            entry_grads[e, 4] = 0.5 * s5
            entry_grads[e, 5] = s6
            entry_grads[e, 6] = _weighted_sum(
                gbuf[(d + 1) * AREA + p0 : (d + 1) * AREA + p1], la[:n], lt[:n], zero
            )
            for k in range(d):
                entry_grads[e, 7 + k] = _weighted_sum(
                    gbuf[k * AREA + p0 : k * AREA + p1], la[:n], lt[:n], zero
                )


@njit(cache=True, nogil=True, inline="always")
def _gv(gbuf, p0, p1, colors, g, z, d, gv):
    """Per lane, g · v for this Gaussian's values (colour, 1, depth)."""
    ga = gbuf[d * AREA + p0 : d * AREA + p1]
    gd = gbuf[(d + 1) * AREA + p0 : (d + 1) * AREA + p1]
    for j in range(gv.shape[0]):
        gv[j] = ga[j] + gd[j] * z
    for k in range(d):
        c = colors[g, k]
        gk = gbuf[k * AREA + p0 : k * AREA + p1]
        for j in range(gv.shape[0]):
            gv[j] += gk[j] * c


@njit(cache=True, nogil=True)
def sum_entries(ids: np.ndarray, entry_grads: np.ndarray, out: np.ndarray) -> None:
    """out[g] += every entry's gradient of Gaussian g."""
    for e in range(ids.shape[0]):
        g = ids[e]
        for j in range(entry_grads.shape[1]):
            out[g, j] += entry_grads[e, j]


@njit(cache=True, nogil=True)
def project(lo, hi, means, quats, scales, opacities, w2c, intr, width, height, near, far, low_pass, alpha_min,
            out_means2d, out_conics, out_depths, out_radii):  # fmt: skip
    """``projection.project_gaussians`` for Gaussians lo..hi-1 of one camera, forward only, in float64: the
    same rules (the Jacobian clamp, the low-pass, opacity-aware boxes)."""
    fx, fy, cx, cy = intr[0], intr[1], intr[2], intr[3]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    for i in range(lo, hi):
        qn = max(np.sqrt(quats[i, 0] ** 2 + quats[i, 1] ** 2 + quats[i, 2] ** 2 + quats[i, 3] ** 2), 1e-12)
        w, x, y, z = quats[i, 0] / qn, quats[i, 1] / qn, quats[i, 2] / qn, quats[i, 3] / qn
        r00, r01, r02 = 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)
        r10, r11, r12 = 2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)
        r20, r21, r22 = 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)
        s0, s1, s2 = scales[i, 0], scales[i, 1], scales[i, 2]
        # rows of V = W R S (camera-space axes of the Gaussian, scaled); its covariance is V Vᵀ
        v00 = (w2c[0, 0] * r00 + w2c[0, 1] * r10 + w2c[0, 2] * r20) * s0
        v01 = (w2c[0, 0] * r01 + w2c[0, 1] * r11 + w2c[0, 2] * r21) * s1
        v02 = (w2c[0, 0] * r02 + w2c[0, 1] * r12 + w2c[0, 2] * r22) * s2
        v10 = (w2c[1, 0] * r00 + w2c[1, 1] * r10 + w2c[1, 2] * r20) * s0
        v11 = (w2c[1, 0] * r01 + w2c[1, 1] * r11 + w2c[1, 2] * r21) * s1
        v12 = (w2c[1, 0] * r02 + w2c[1, 1] * r12 + w2c[1, 2] * r22) * s2
        v20 = (w2c[2, 0] * r00 + w2c[2, 1] * r10 + w2c[2, 2] * r20) * s0
        v21 = (w2c[2, 0] * r01 + w2c[2, 1] * r11 + w2c[2, 2] * r21) * s1
        v22 = (w2c[2, 0] * r02 + w2c[2, 1] * r12 + w2c[2, 2] * r22) * s2
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
        a0, a1, a2 = j00 * v00 + j02 * v20, j00 * v01 + j02 * v21, j00 * v02 + j02 * v22
        b0, b1, b2 = j11 * v10 + j12 * v20, j11 * v11 + j12 * v21, j11 * v12 + j12 * v22
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


@njit(cache=True, nogil=True, inline="always")
def _mm3(a, b, out):
    """out = a @ b for 3 × 3 arrays (no BLAS call, no allocation)."""
    for r in range(3):
        for c in range(3):
            out[r, c] = a[r, 0] * b[0, c] + a[r, 1] * b[1, c] + a[r, 2] * b[2, c]


@njit(cache=True, nogil=True)
def project_backward(lo, hi, means, quats, scales, w2c, intr, width, height, near, far, low_pass, g_means2d,
                     g_conics, g_depths, g_means, g_quats, g_scales, g_camera):  # fmt: skip
    """Gradients of ``project`` for Gaussians lo..hi-1 of one camera, in float64: from those of means2d
    (N, 2), conics (N, 3) and depths (N,), add to g_means (N, 3), g_quats (N, 4) and g_scales (N, 3), and to
    g_camera (20,): world_to_cam's top three rows (12, row-major), then fx, fy, cx, cy, then 4 unused.

    The chain of ``projection.project_gaussians``, written out: conic = inverse of the 2D covariance
    (dΣ⁻¹ = −Σ⁻¹ dΣ Σ⁻¹), Σ2 = J Σc Jᵀ, Σc = R Σ3 Rᵀ, Σ3 = M Mᵀ with M = R(q̂) diag(s), q̂ = q / |q|, the
    perspective Jacobian J with its clamped direction, and the projected centre."""
    fx, fy, cx, cy = intr[0], intr[1], intr[2], intr[3]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    rc = np.ascontiguousarray(w2c[:3, :3])
    rct = np.ascontiguousarray(rc.T)
    m, mt = np.empty((3, 3)), np.empty((3, 3))  # M = R(q̂) diag(s)
    rq = np.empty((3, 3))
    vm, vmt = np.empty((3, 3)), np.empty((3, 3))
    sc, s3 = np.empty((3, 3)), np.empty((3, 3))  # Σc, Σ3
    gsc, gs3 = np.empty((3, 3)), np.empty((3, 3))  # their gradients (symmetric)
    gm, grq, grc = np.empty((3, 3)), np.empty((3, 3)), np.empty((3, 3))
    t1, t2 = np.empty((3, 3)), np.empty((3, 3))
    for i in range(lo, hi):
        g_mx, g_my = g_means2d[i, 0], g_means2d[i, 1]
        g_q0, g_q1, g_q2, g_z = g_conics[i, 0], g_conics[i, 1], g_conics[i, 2], g_depths[i]
        if g_mx == 0 and g_my == 0 and g_q0 == 0 and g_q1 == 0 and g_q2 == 0 and g_z == 0:
            continue
        # forward again
        qn = np.sqrt(quats[i, 0] ** 2 + quats[i, 1] ** 2 + quats[i, 2] ** 2 + quats[i, 3] ** 2)
        qs = max(qn, 1e-12)
        w, x, y, z = quats[i, 0] / qs, quats[i, 1] / qs, quats[i, 2] / qs, quats[i, 3] / qs
        rq[0, 0], rq[0, 1], rq[0, 2] = 1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)
        rq[1, 0], rq[1, 1], rq[1, 2] = 2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)
        rq[2, 0], rq[2, 1], rq[2, 2] = 2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)
        for a in range(3):
            for b in range(3):
                m[a, b] = rq[a, b] * scales[i, b]
                mt[b, a] = m[a, b]
        # Σc = (Rc M)(Rc M)ᵀ
        _mm3(rc, m, vm)
        for a in range(3):
            for b in range(3):
                vmt[b, a] = vm[a, b]
        _mm3(vm, vmt, sc)
        px = w2c[0, 0] * means[i, 0] + w2c[0, 1] * means[i, 1] + w2c[0, 2] * means[i, 2] + w2c[0, 3]
        py = w2c[1, 0] * means[i, 0] + w2c[1, 1] * means[i, 1] + w2c[1, 2] * means[i, 2] + w2c[1, 3]
        pz = w2c[2, 0] * means[i, 0] + w2c[2, 1] * means[i, 1] + w2c[2, 2] * means[i, 2] + w2c[2, 3]
        in_depth = near < pz < far
        zs = pz if in_depth else 1.0
        ux, uy = px / zs, py / zs
        tx = zs * min(max(ux, -lim_x_neg), lim_x_pos)
        ty = zs * min(max(uy, -lim_y_neg), lim_y_pos)
        j00, j02 = fx / zs, -fx * tx / (zs * zs)
        j11, j12 = fy / zs, -fy * ty / (zs * zs)
        # J Σc rows, then Σ2
        t00 = j00 * sc[0, 0] + j02 * sc[2, 0]
        t01 = j00 * sc[0, 1] + j02 * sc[2, 1]
        t02 = j00 * sc[0, 2] + j02 * sc[2, 2]
        t10 = j11 * sc[1, 0] + j12 * sc[2, 0]
        t11 = j11 * sc[1, 1] + j12 * sc[2, 1]
        t12 = j11 * sc[1, 2] + j12 * sc[2, 2]
        ca = t00 * j00 + t02 * j02 + low_pass
        cb = t01 * j11 + t02 * j12
        cc = t11 * j11 + t12 * j12 + low_pass
        det = ca * cc - cb * cb
        # conic = (c, -b, a) / det  →  gradients of a, b, c
        if in_depth and det > 0:
            i2 = 1.0 / (det * det)
            g_a = (-cc * cc * g_q0 + cb * cc * g_q1 - cb * cb * g_q2) * i2
            g_b = (2 * cb * cc * g_q0 - (det + 2 * cb * cb) * g_q1 + 2 * ca * cb * g_q2) * i2
            g_c = (-cb * cb * g_q0 + ca * cb * g_q1 - ca * ca * g_q2) * i2
        else:
            g_a, g_b, g_c = g_q2, -g_q1, g_q0
        # Σ2 = J Σc Jᵀ with the symmetric gradient G = [[g_a, g_b/2], [g_b/2, g_c]]:
        # dJ = 2 G J Σc,  dΣc = Jᵀ G J
        hb = 0.5 * g_b
        g_j00 = 2 * (g_a * t00 + hb * t10)
        g_j02 = 2 * (g_a * t02 + hb * t12)
        g_j11 = 2 * (hb * t01 + g_c * t11)
        g_j12 = 2 * (hb * t02 + g_c * t12)
        # Jᵀ G J over the nonzero entries of J: columns 0 (j00), 1 (j11), 2 (j02, j12)
        ga0 = g_a * j00
        gb0 = hb * j00
        ga1 = hb * j11
        gb1 = g_c * j11
        ga2 = g_a * j02 + hb * j12
        gb2 = hb * j02 + g_c * j12
        col = ((j00, 0.0), (0.0, j11), (j02, j12))
        gcol = ((ga0, gb0), (ga1, gb1), (ga2, gb2))
        for a in range(3):
            for b in range(3):
                gsc[a, b] = col[a][0] * gcol[b][0] + col[a][1] * gcol[b][1]
        # J's entries → fx, fy, zs, tx, ty
        g_fx = g_j00 / zs - g_j02 * tx / (zs * zs)
        g_fy = g_j11 / zs - g_j12 * ty / (zs * zs)
        g_tx = -g_j02 * fx / (zs * zs)
        g_ty = -g_j12 * fy / (zs * zs)
        g_zs = -g_j00 * fx / (zs * zs) + 2 * g_j02 * fx * tx / (zs * zs * zs)
        g_zs += -g_j11 * fy / (zs * zs) + 2 * g_j12 * fy * ty / (zs * zs * zs)
        # means2d = (fx x / zs + cx, fy y / zs + cy)
        g_fx += g_mx * ux
        g_fy += g_my * uy
        g_px = g_mx * fx / zs
        g_py = g_my * fy / zs
        g_zs += -g_mx * fx * ux / zs - g_my * fy * uy / zs
        g_cx, g_cy = g_mx, g_my
        # tx = zs · clamp(x / zs, -lim_neg, lim_pos): x itself inside the limits, else zs · limit
        if -lim_x_neg < ux < lim_x_pos:
            g_px += g_tx
        else:
            lim = lim_x_pos if ux >= lim_x_pos else -lim_x_neg
            g_zs += g_tx * lim
            g_lim = g_tx * zs  # d lim_x_pos / d(cx, fx) and d(-lim_x_neg) / d(cx, fx)
            if ux >= lim_x_pos:
                g_cx += -g_lim / fx
                g_fx += -g_lim * (width - cx + 0.15 * width) / (fx * fx)
            else:
                g_cx += -g_lim / fx
                g_fx += g_lim * (cx + 0.15 * width) / (fx * fx)
        if -lim_y_neg < uy < lim_y_pos:
            g_py += g_ty
        else:
            lim = lim_y_pos if uy >= lim_y_pos else -lim_y_neg
            g_zs += g_ty * lim
            g_lim = g_ty * zs
            if uy >= lim_y_pos:
                g_cy += -g_lim / fy
                g_fy += -g_lim * (height - cy + 0.15 * height) / (fy * fy)
            else:
                g_cy += -g_lim / fy
                g_fy += g_lim * (cy + 0.15 * height) / (fy * fy)
        g_pz = g_z + (g_zs if in_depth else 0.0)
        # p = Rc m + t
        for a in range(3):
            g_means[i, a] += rc[0, a] * g_px + rc[1, a] * g_py + rc[2, a] * g_pz
        gp = (g_px, g_py, g_pz)
        for a in range(3):
            for b in range(3):
                g_camera[4 * a + b] += gp[a] * means[i, b]
            g_camera[4 * a + 3] += gp[a]
        # Σc = Rc Σ3 Rcᵀ: dRc = 2 dΣc Rc Σ3; dΣ3 = Rcᵀ dΣc Rc
        _mm3(m, mt, s3)
        _mm3(gsc, rc, t1)
        _mm3(t1, s3, grc)
        for a in range(3):
            for b in range(3):
                g_camera[4 * a + b] += 2.0 * grc[a, b]
        _mm3(rct, gsc, t2)
        _mm3(t2, rc, gs3)
        # Σ3 = M Mᵀ: dM = 2 dΣ3 M; M = R(q̂) diag(s)
        _mm3(gs3, m, gm)
        for a in range(3):
            for b in range(3):
                gm[a, b] *= 2.0
        for b in range(3):
            g_scales[i, b] += gm[0, b] * rq[0, b] + gm[1, b] * rq[1, b] + gm[2, b] * rq[2, b]
            for a in range(3):
                grq[a, b] = gm[a, b] * scales[i, b]
        # R(q̂) → q̂
        gw = 2 * (
            -z * grq[0, 1] + y * grq[0, 2] + z * grq[1, 0] - x * grq[1, 2] - y * grq[2, 0] + x * grq[2, 1]
        )
        gx = 2 * (y * grq[0, 1] + z * grq[0, 2] + y * grq[1, 0] - 2 * x * grq[1, 1] - w * grq[1, 2]
                  + z * grq[2, 0] + w * grq[2, 1] - 2 * x * grq[2, 2])  # fmt: skip
        gy = 2 * (-2 * y * grq[0, 0] + x * grq[0, 1] + w * grq[0, 2] + x * grq[1, 0] + z * grq[1, 2]
                  - w * grq[2, 0] + z * grq[2, 1] - 2 * y * grq[2, 2])  # fmt: skip
        gz = 2 * (-2 * z * grq[0, 0] - w * grq[0, 1] + x * grq[0, 2] + w * grq[1, 0] - 2 * z * grq[1, 1]
                  + y * grq[1, 2] + x * grq[2, 0] + y * grq[2, 1])  # fmt: skip
        # q̂ = q / max(|q|, 1e-12)
        if qn > 1e-12:
            dot = w * gw + x * gx + y * gy + z * gz
            g_quats[i, 0] += (gw - w * dot) / qn
            g_quats[i, 1] += (gx - x * dot) / qn
            g_quats[i, 2] += (gy - y * dot) / qn
            g_quats[i, 3] += (gz - z * dot) / qn
        else:
            g_quats[i, 0] += gw / qs
            g_quats[i, 1] += gx / qs
            g_quats[i, 2] += gy / qs
            g_quats[i, 3] += gz / qs
        g_camera[12] += g_fx
        g_camera[13] += g_fy
        g_camera[14] += g_cx
        g_camera[15] += g_cy
