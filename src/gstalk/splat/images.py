"""Image conversions on the compiled path: float RGB to uint8 on gstalk's worker threads."""

from __future__ import annotations

import numpy as np
from numba import njit

from .threads import for_each_part, split_range


@njit(cache=True, nogil=True)
def _to_uint8(lo: int, hi: int, src: np.ndarray, out: np.ndarray) -> None:
    for i in range(lo, hi):
        v = src[i] * 255.0 + 0.5
        out[i] = 0 if v < 0.0 else (255 if v > 255.0 else np.uint8(v))


def float_to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] → uint8, rounded and clipped (as ``(x.clamp(0, 1) * 255 + 0.5)``)."""
    src = np.ascontiguousarray(image, dtype=np.float32).reshape(-1)
    out = np.empty(src.shape, np.uint8)
    for_each_part(lambda part: _to_uint8(*part, src, out), split_range(src.size))
    return out.reshape(image.shape)
