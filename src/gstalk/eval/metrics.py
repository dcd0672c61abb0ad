"""Image and motion metrics: PSNR, SSIM, mouth-crop PSNR, LMD; the lip-sync measure that needs no
downloaded weights (audio energy against mouth opening, with the best offset) lives below eval, in
``face.sync`` and ``media.audio``, so that ``prepare`` checks every clip with it too; it is re-exported
here."""

from __future__ import annotations

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..face.landmarks import LIPS_INNER, LIPS_OUTER
from ..face.sync import SyncMeasure, lip_sync, mouth_opening
from ..face.track import FaceTracker
from ..media.audio import audio_energy

__all__ = [
    "SyncMeasure",
    "audio_energy",
    "face_box",
    "lip_sync",
    "lmd",
    "mouth_box",
    "mouth_opening",
    "mouth_psnr",
    "psnr",
    "spread",
    "ssim",
]

MOUTH_POINTS = LIPS_OUTER + LIPS_INNER
LMD_SIZE = 512  # LMD is reported in pixels of a 512² frame, as the papers do


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(a, b, data_range=255))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def mouth_box(landmarks: np.ndarray, size: int, scale: float, margin: float = 0.35) -> tuple[int, int, int]:
    """Square (x0, y0, side) around the lips, ``landmarks`` in pixels of a frame ``scale`` times larger
    than this one."""
    pts = landmarks[LIPS_OUTER, :2] * scale
    lo, hi = pts.min(0), pts.max(0)
    side = int(np.ceil(max(hi - lo) * (1 + 2 * margin)))
    cx, cy = (lo + hi) / 2
    x0 = int(np.clip(round(cx - side / 2), 0, max(size - side, 0)))
    y0 = int(np.clip(round(cy - side / 2), 0, max(size - side, 0)))
    return x0, y0, min(side, size)


def face_box(landmarks: np.ndarray, size: int, scale: float, margin: float = 0.1) -> tuple[int, int, int]:
    """Square (x0, y0, side) around the whole face (all landmarks), for SyncNet's face crops."""
    pts = landmarks[:, :2] * scale
    lo, hi = pts.min(0), pts.max(0)
    side = int(np.ceil(max(hi - lo) * (1 + 2 * margin)))
    cx, cy = (lo + hi) / 2
    return round(cx - side / 2), round(cy - side / 2), side


def mouth_psnr(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int]) -> float:
    x0, y0, s = box
    return psnr(a[y0 : y0 + s, x0 : x0 + s], b[y0 : y0 + s, x0 : x0 + s])


class MouthTracker:
    """MediaPipe mouth landmarks of a sequence of frames, at LMD_SIZE² pixels."""

    def __init__(self) -> None:
        self.tracker = FaceTracker()

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        if rgb.shape[0] != LMD_SIZE:
            rgb = cv2.resize(rgb, (LMD_SIZE, LMD_SIZE), interpolation=cv2.INTER_CUBIC)
        obs = self.tracker.track(rgb)
        return None if obs is None else obs.landmarks[:, :2]

    def close(self) -> None:
        self.tracker.close()


def lmd(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Mean distance between the mouth landmarks of two faces (pixels at 512²); None if either is missing."""
    if a is None or b is None:
        return None
    return float(np.linalg.norm(a[MOUTH_POINTS] - b[MOUTH_POINTS], axis=1).mean())


def spread(values) -> float | None:
    """The 5th–95th percentile range of the finite values (None when fewer than 3)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return round(float(np.percentile(v, 95) - np.percentile(v, 5)), 6) if v.size >= 3 else None
