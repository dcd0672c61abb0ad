"""Image conversions on the compiled path: float RGB to uint8 (on gstalk's worker threads), uint8 to float."""

from __future__ import annotations

import numpy as np
from numba import njit

from .threads import for_each_part, split_range


@njit(cache=True, nogil=True)
def _to_uint8(lo: int, hi: int, src: np.ndarray, out: np.ndarray) -> None:
    """float32 → uint8 as PyTorch's ``(x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)``, in float32 (so the
    same values round up), in a loop LLVM vectorises."""
    block_src, block_out = src[lo:hi], out[lo:hi]
    for i in range(block_src.shape[0]):
        x = min(max(block_src[i], np.float32(0.0)), np.float32(1.0))
        block_out[i] = np.uint8(x * np.float32(255.0) + np.float32(0.5))


def float_to_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] → uint8, rounded and clipped as ``(x.clamp(0, 1) * 255 + 0.5)``."""
    src = np.ascontiguousarray(image, dtype=np.float32).reshape(-1)
    out = np.empty(src.shape, np.uint8)
    for_each_part(lambda part: _to_uint8(*part, src, out), split_range(src.size, min_per_part=1 << 18))
    return out.reshape(image.shape)


@njit(cache=True, nogil=True, error_model="numpy")
def _to_float(src: np.ndarray, out: np.ndarray) -> None:
    for i in range(src.shape[0]):
        out[i] = np.float32(src[i]) / np.float32(255.0)


def uint8_to_float(image: np.ndarray) -> np.ndarray:
    """uint8 → float32 in [0, 1], ``x / 255`` correctly rounded (bit for bit PyTorch's
    ``x.float() / 255``), on the calling thread alone (it runs on reading threads, beside the render)."""
    src = np.ascontiguousarray(image).reshape(-1)
    out = np.empty(src.shape, np.float32)
    _to_float(src, out)
    return out.reshape(image.shape)
