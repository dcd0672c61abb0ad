"""Image and motion metrics: PSNR, SSIM, mouth-crop PSNR, LMD, and a lip-sync measure that needs no
downloaded weights (audio energy against mouth opening, with the best offset)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ..face.landmarks import INNER_LIP_MID, LIPS_INNER, LIPS_OUTER, OUTER_EYE_CORNERS
from ..face.track import FaceTracker
from ..media.audio import AUDIO_RATE

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


def mouth_opening(landmarks: np.ndarray | None) -> float:
    """Inner-lip gap over the outer-eye-corner distance (NaN when no face)."""
    if landmarks is None:
        return float("nan")
    gap = np.linalg.norm(landmarks[INNER_LIP_MID[0]] - landmarks[INNER_LIP_MID[1]])
    return float(gap / np.linalg.norm(landmarks[OUTER_EYE_CORNERS[0]] - landmarks[OUTER_EYE_CORNERS[1]]))


def spread(values) -> float | None:
    """The 5th–95th percentile range of the finite values (None when fewer than 3)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return round(float(np.percentile(v, 95) - np.percentile(v, 5)), 6) if v.size >= 3 else None


def audio_energy(audio: np.ndarray, n_frames: int, fps: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """Per video frame, the log RMS energy of the audio in that frame's 40 ms (dB)."""
    hop = rate / fps
    out = np.empty(n_frames)
    for k in range(n_frames):
        seg = audio[int(k * hop) : int((k + 1) * hop)]
        out[k] = 10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-10) if seg.size else -100.0
    return out


@dataclass
class SyncMeasure:
    correlation: float  # Pearson correlation of audio energy and mouth opening at the best offset
    offset_frames: int  # positive: the mouth moves after the sound
    correlation_at_zero: float

    def as_dict(self) -> dict:
        """JSON-ready: a correlation that could not be computed is None, with the reason beside it."""
        out: dict = {
            "correlation": round(self.correlation, 4) if np.isfinite(self.correlation) else None,
            "offset_frames": self.offset_frames,
            "correlation_at_zero": (
                round(self.correlation_at_zero, 4) if np.isfinite(self.correlation_at_zero) else None
            ),
        }
        if out["correlation"] is None:
            out["note"] = "not computed: fewer than 10 frames with a face and sound, or no variation"
        return out


def lip_sync(energy: np.ndarray, opening: np.ndarray, max_offset: int = 5) -> SyncMeasure:
    """How well mouth opening follows the audio energy, searching offsets of ±``max_offset`` frames."""
    best, best_off, at_zero = -2.0, 0, float("nan")
    n = min(len(energy), len(opening))
    energy, opening = np.asarray(energy[:n], float), np.asarray(opening[:n], float)
    for off in range(-max_offset, max_offset + 1):
        if abs(off) >= n:  # too few frames for this offset
            continue
        if off >= 0:
            e, m = energy[: len(energy) - off], opening[off:]
        else:
            e, m = energy[-off:], opening[: len(opening) + off]
        ok = np.isfinite(e) & np.isfinite(m)
        if ok.sum() < 10 or np.std(e[ok]) == 0 or np.std(m[ok]) == 0:
            continue
        r = float(np.corrcoef(e[ok], m[ok])[0, 1])
        if off == 0:
            at_zero = r
        if r > best:
            best, best_off = r, off
    return SyncMeasure(best if best > -2 else float("nan"), best_off, at_zero)


def lagged_correlation(predicted: np.ndarray, real: np.ndarray, max_lag: int = 3) -> dict:
    """How a predicted per-frame signal follows a real one: Pearson correlation of the two, each z-scored,
    at lag 0, and the lag within ±``max_lag`` frames where it peaks (positive: the prediction comes
    ``lag`` frames later than the real signal). Frames where either is NaN are left out.

    Returns ``{"correlation": r at lag 0, "peak_lag": lag, "peak_correlation": r there}`` (None values
    with a ``note`` when fewer than 10 frames or no variation)."""
    n = min(len(predicted), len(real))
    a, b = np.asarray(predicted[:n], np.float64), np.asarray(real[:n], np.float64)
    by_lag = {}
    for lag in range(-max_lag, max_lag + 1):
        p, r = (a[lag:], b[: n - lag]) if lag >= 0 else (a[: n + lag], b[-lag:])
        ok = np.isfinite(p) & np.isfinite(r)
        if ok.sum() >= 10 and np.std(p[ok]) > 0 and np.std(r[ok]) > 0:
            by_lag[lag] = float(np.corrcoef(p[ok], r[ok])[0, 1])
    if 0 not in by_lag:
        return {"correlation": None, "peak_lag": None, "peak_correlation": None,
                "note": "not computed: fewer than 10 frames with a face, or no variation"}  # fmt: skip
    peak = max(by_lag, key=lambda lag: (by_lag[lag], -abs(lag)))
    return {"correlation": round(by_lag[0], 4), "peak_lag": peak, "peak_correlation": round(by_lag[peak], 4)}
