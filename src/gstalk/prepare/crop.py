"""One fixed square crop around the head for the whole clip: no per-frame crop jitter."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..face.landmarks import CHIN, FOREHEAD


@dataclass(frozen=True)
class Crop:
    x0: int
    y0: int
    side: int
    size: int  # output side after resizing

    @property
    def scale(self) -> float:
        return self.size / self.side

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """Crop and resize one frame (pads with edge pixels if the crop leaves the frame)."""
        h, w = rgb.shape[:2]
        x1, y1 = self.x0 + self.side, self.y0 + self.side
        if self.x0 < 0 or self.y0 < 0 or x1 > w or y1 > h:
            pad = max(-self.x0, -self.y0, x1 - w, y1 - h, 0)
            rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            patch = rgb[self.y0 + pad : y1 + pad, self.x0 + pad : x1 + pad]
        else:
            patch = rgb[self.y0 : y1, self.x0 : x1]
        if self.side == self.size:
            return np.ascontiguousarray(patch)
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_LINEAR
        return cv2.resize(patch, (self.size, self.size), interpolation=interp)

    def points(self, pts: np.ndarray) -> np.ndarray:
        """Map (..., >=2) pixel coordinates (and MediaPipe's pixel-scaled z) into the crop."""
        out = pts.astype(np.float32).copy()
        out[..., 0] = (out[..., 0] - self.x0) * self.scale
        out[..., 1] = (out[..., 1] - self.y0) * self.scale
        if out.shape[-1] > 2:
            out[..., 2] *= self.scale
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def choose_crop(
    landmarks: np.ndarray, valid: np.ndarray, width: int, height: int, size: int, scale: float = 2.6
) -> Crop:
    """Square crop ``scale`` face heights wide, centred a little below the face, kept inside the frame.

    A square frame whose crop would cover most of it anyway (a clip already cropped to the head, like the
    research datasets) is used whole.
    """
    pts = landmarks[valid]
    face_h = float(np.median(np.linalg.norm(pts[:, CHIN, :2] - pts[:, FOREHEAD, :2], axis=-1)))
    centres = 0.5 * (pts[:, :, :2].min(1) + pts[:, :, :2].max(1))
    cx, cy = np.median(centres, axis=0)
    cy += 0.2 * face_h
    lo, hi = pts[:, :, :2].min((0, 1)), pts[:, :, :2].max((0, 1))
    side = max(scale * face_h, 1.15 * float(max(hi - lo)))
    side = round(min(side, width, height))
    if width == height and side >= 0.8 * width:
        return Crop(0, 0, width, size)
    x0 = round(np.clip(cx - side / 2, 0, width - side))
    y0 = round(np.clip(cy - side / 2, 0, height - side))
    return Crop(x0, y0, side, size)
