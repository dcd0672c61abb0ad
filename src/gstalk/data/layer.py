"""The real-pixel layer under the rendered head, compiled: one pass over the frame's pixels, and one over
the box above its neck.

The layer (uint8, like the frame) is the frame's hair, neck, torso and background pixels, and the
background plate where its head was, except in two bands:

- just above the neck, the neck's mean colour near its top. When the rendered jaw does not reach as low as
  the replayed frame's, that band shows there: neck-coloured, like the shadow under a chin, rather than a
  bright seam of background plate;
- along the head's border (``EDGE`` of the image from a hair, neck, torso or background pixel outside the
  row's span of head pixels: temples, ears, hairline, cheeks, jaw), the frame's own pixels. Where the
  render's edge is not quite opaque, or the label map's border jitters across an ear, or the rendered jaw
  (which follows the speech) falls short of the frame's, the frame's own edge shows rather than a line of
  background plate; the upper face is posed by that frame, so there its silhouette is the frame's.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..regions import HEAD_REGIONS, PIXEL_REGIONS, Region

#: label → True for the regions shown from the real frame (hair, neck, torso, background)
PIXEL_LUT = np.isin(np.arange(256), PIXEL_REGIONS)
#: label → True for the head's regions (face, brows, eyes, lips, mouth interior)
HEAD_LUT = np.isin(np.arange(256), HEAD_REGIONS)
#: label → True for the lips and the mouth interior
MOUTH_LUT = np.isin(np.arange(256), (Region.LIPS, Region.MOUTH_INTERIOR))
#: rows of neck colour carried up under the chin, as a share of the image size
UNDER_CHIN = 0.02
#: width of the head's border that keeps the frame's own pixels, as a share of the image size
EDGE = 0.015


@njit(cache=True, nogil=True)
def _compose(image, labels, plate, pixel_lut, neck, out) -> np.ndarray:
    """``out`` = the frame where ``pixel_lut[label]``, else the plate; returns the neck's box (first row,
    last row, first column, last column; first row -1 when there is no neck)."""
    h, w = labels.shape
    box = np.array([-1, -1, w, -1])
    for r in range(h):
        for c in range(w):
            label = labels[r, c]
            src = image if pixel_lut[label] else plate
            out[r, c, 0], out[r, c, 1], out[r, c, 2] = src[r, c, 0], src[r, c, 1], src[r, c, 2]
            if label == neck:
                if box[0] < 0:
                    box[0] = r
                box[1] = r
                box[2] = min(box[2], c)
                box[3] = max(box[3], c)
    return box


@njit(cache=True, nogil=True)
def _neck_sums(image, labels, neck, r0, r1) -> np.ndarray:
    """Sums of the neck pixels' channels in rows ``r0:r1``, and their count (float64, exact)."""
    sums = np.zeros(4)
    for r in range(r0, r1):
        for c in range(labels.shape[1]):
            if labels[r, c] == neck:
                sums[0] += image[r, c, 0]
                sums[1] += image[r, c, 1]
                sums[2] += image[r, c, 2]
                sums[3] += 1
    return sums


@njit(cache=True, nogil=True)
def _fill_band(labels, head_lut, neck, band, r0, r1, c0, c1, colour, out) -> None:
    """In rows ``r0:r1`` and columns ``c0:c1``: head pixels with a neck pixel at most ``band`` rows
    below (within the box) take ``colour``."""
    next_neck = np.full(c1 - c0, 1 << 30)  # per column: the nearest neck row at or below this one
    for r in range(r1 - 1, r0 - 1, -1):
        for c in range(c0, c1):
            label = labels[r, c]
            if label == neck:
                next_neck[c - c0] = r
            elif head_lut[label] and next_neck[c - c0] - r <= band:
                out[r, c, 0], out[r, c, 1], out[r, c, 2] = colour[0], colour[1], colour[2]


@njit(cache=True, nogil=True)
def _keep_border(image, labels, pixel_lut, head_lut, band, out) -> None:
    """Head pixels with an outer ``pixel_lut`` pixel within ``band`` rows and columns (a (2·band + 1)²
    square, clipped to the image) take the frame's own pixel. Outer: outside its row's span of head
    pixels (specks of hair label inside the face, at a brow, do not count). Separable: per row, how many
    outer pixels lie within ``band`` columns; per column, whether any row within ``band`` rows has one."""
    h, w = labels.shape
    near_row = np.zeros((h, w), np.int32)  # 1: an outer pixel within band columns in this row
    run = np.zeros(w + 1, np.int32)
    for r in range(h):
        first, last = w, -1  # the row's span of head pixels
        for c in range(w):
            if head_lut[labels[r, c]]:
                first, last = min(first, c), c
        for c in range(w):
            run[c + 1] = run[c] + (pixel_lut[labels[r, c]] and (c < first or c > last))
        for c in range(w):
            near_row[r, c] = run[min(c + band + 1, w)] - run[max(c - band, 0)] > 0
    column = np.zeros(h + 1, np.int32)
    for c in range(w):
        for r in range(h):
            column[r + 1] = column[r] + near_row[r, c]
        for r in range(h):
            if head_lut[labels[r, c]] and column[min(r + band + 1, h)] - column[max(r - band, 0)] > 0:
                out[r, c, 0], out[r, c, 1], out[r, c, 2] = image[r, c, 0], image[r, c, 1], image[r, c, 2]


def real_layer(image: np.ndarray, labels: np.ndarray, plate: np.ndarray) -> np.ndarray:
    """The real-pixel layer (see the module docstring) of ``image`` (H, W, 3) uint8 with its ``labels``
    (H, W) uint8 Region ids over ``plate`` (H, W, 3) uint8, the background plate: (H, W, 3) uint8."""
    image, plate = np.ascontiguousarray(image), np.ascontiguousarray(plate)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    out = np.empty_like(image)
    neck = int(Region.NECK)
    top, bottom, c0, c1 = _compose(image, labels, plate, PIXEL_LUT, neck, out)
    edge = max(1, round(EDGE * labels.shape[0]))
    _keep_border(image, labels, PIXEL_LUT, HEAD_LUT, edge, out)
    if top < 0:
        return out
    band = max(1, round(UNDER_CHIN * labels.shape[0]))
    sums = _neck_sums(image, labels, neck, top, min(top + 2 * band, labels.shape[0]))
    colour = np.round(sums[:3] / sums[3]).astype(np.uint8)  # the neck's upper part: skin, not collar
    _fill_band(labels, HEAD_LUT, neck, band, max(0, top - band), bottom + 1, c0, c1 + 1, colour, out)
    return out
