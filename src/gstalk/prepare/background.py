"""A static background plate: the clip's background with the person removed.

Per pixel, the median over sampled frames where that pixel is background (away from the person's edge);
pixels the person never uncovers are inpainted from their surroundings.
"""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from ..regions import Region


class BackgroundAccumulator:
    """Collects background pixels from sampled frames without holding the clip; call :meth:`plate`."""

    def __init__(self, max_samples: int = 60, erode_px: int = 5) -> None:
        self.max_samples = max_samples
        self.kernel = np.ones((2 * erode_px + 1, 2 * erode_px + 1), np.uint8)
        self.frames: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []

    def add(self, rgb: np.ndarray, labels: np.ndarray) -> None:
        background = cv2.erode((labels == Region.BACKGROUND).astype(np.uint8), self.kernel).astype(bool)
        self.frames.append(rgb)
        self.masks.append(background)

    def plate(self) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 plate, and (H, W) bool: where it was seen rather than inpainted."""
        frames = np.stack(self.frames).astype(np.float32)
        masks = np.stack(self.masks)
        frames[~masks] = np.nan
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: never-seen pixels
            plate = np.nanmedian(frames, axis=0)
        seen = masks.any(0)
        plate = np.nan_to_num(plate).clip(0, 255).astype(np.uint8)
        if not seen.all():
            radius = max(3, int(0.02 * max(plate.shape[:2])))
            plate = cv2.inpaint(plate, (~seen).astype(np.uint8), radius, cv2.INPAINT_TELEA)
        return plate, seen


def sample_indices(n_frames: int, count: int) -> set[int]:
    """``count`` frame indices spread evenly over the clip."""
    return set(np.linspace(0, n_frames - 1, min(count, n_frames)).astype(int).tolist())
