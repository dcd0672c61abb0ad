"""The real-pixel layer under the rendered head, compiled: one pass over the frame's pixels, and one over
the box above its neck.

The layer (uint8, like the frame) is the frame's hair, neck, torso and background pixels, and the
background plate where its head was, except in a thin band just above the neck, which takes the neck's
mean colour near its top. When the rendered jaw does not reach as low as the replayed frame's, that band
shows there: neck-coloured, like the shadow under a chin, rather than a bright seam of background plate.

Every frame a render replays and every training step makes one, so it is compiled (numba): the NumPy
formulation (a lookup, ``np.where`` over the image, ``np.nonzero`` of the neck, a dilation by repeated
shifts) cost about as much as decoding the frame. ``tests/test_drive_and_eval.py`` holds it to that
formulation exactly.
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


def real_layer(image: np.ndarray, labels: np.ndarray, plate: np.ndarray) -> np.ndarray:
    """The real-pixel layer (see the module docstring) of ``image`` (H, W, 3) uint8 with its ``labels``
    (H, W) uint8 Region ids over ``plate`` (H, W, 3) uint8, the background plate: (H, W, 3) uint8."""
    image, plate = np.ascontiguousarray(image), np.ascontiguousarray(plate)
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    out = np.empty_like(image)
    neck = int(Region.NECK)
    top, bottom, c0, c1 = _compose(image, labels, plate, PIXEL_LUT, neck, out)
    if top < 0:
        return out
    band = max(1, round(UNDER_CHIN * labels.shape[0]))
    sums = _neck_sums(image, labels, neck, top, min(top + 2 * band, labels.shape[0]))
    colour = np.round(sums[:3] / sums[3]).astype(np.uint8)  # the neck's upper part: skin, not collar
    _fill_band(labels, HEAD_LUT, neck, band, max(0, top - band), bottom + 1, c0, c1 + 1, colour, out)
    return out
