"""``--pose idle``: a gentle head motion and blinks, for an avatar held at one frame (a photo's above all).

Nothing here is learnt: the head turns by sums of slow sinusoids at unrelated periods (a few degrees of
yaw, less of pitch and roll, never repeating within a minute), and the eyes blink every 2.5–5.5 s (a
fixed pseudo-random sequence, so a frame's pose depends only on its index: streaming, serving and an
offline render agree) for 0.24 s, the upper lids moving onto the lower ones. Both are functions of the
output frame's index k and the frame rate.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

#: (amplitude in degrees, period in seconds, phase) of each axis's sinusoids: yaw, pitch, roll
SWAY = {
    "yaw": ((2.0, 7.3, 0.0), (0.8, 3.1, 1.3)),
    "pitch": ((1.2, 5.9, 0.7), (0.5, 2.3, 2.1)),
    "roll": ((0.8, 9.7, 1.9),),
}
#: seconds between blinks (uniform) and a blink's length
BLINK_EVERY = (2.5, 5.5)
BLINK_SECONDS = 0.24
#: upper and lower lid of each eye, point for point (MediaPipe mesh), corners excluded
UPPER_LIDS = (246, 161, 160, 159, 158, 157, 173, 466, 388, 387, 386, 385, 384, 398)
LOWER_LIDS = (7, 163, 144, 145, 153, 154, 155, 249, 390, 373, 374, 380, 381, 382)
#: the ring above each upper lid, moved half as far (the lid's skin folds down with it)
UPPER_RING = (247, 30, 29, 27, 28, 56, 190, 467, 260, 259, 257, 258, 286, 414)


def idle_angles(k: int, fps: float) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of output frame ``k``."""
    t = k / fps
    return tuple(
        float(sum(a * np.sin(2 * np.pi * t / period + phase) for a, period, phase in SWAY[axis]))
        for axis in ("yaw", "pitch", "roll")
    )  # type: ignore[return-value]


def idle_rotation(k: int, fps: float) -> np.ndarray:
    """(3, 3) head-frame rotation of output frame ``k``'s idle motion."""
    yaw, pitch, roll = idle_angles(k, fps)
    return Rotation.from_euler("yxz", [yaw, pitch, roll], degrees=True).as_matrix()


#: when each blink starts, seconds (a fixed sequence: over 13 hours before it ends)
_STARTS = np.cumsum(np.random.default_rng(7).uniform(*BLINK_EVERY, size=20_000)) - 1.0


def blink_amount(k: int, fps: float) -> float:
    """How closed the eyes are at output frame ``k``: 0 open … 1 shut (a smooth close and open)."""
    t = (k / fps) % _STARTS[-1]
    last = np.searchsorted(_STARTS, t, side="right") - 1
    since = t - _STARTS[last] if last >= 0 else np.inf
    if since >= BLINK_SECONDS:
        return 0.0
    return float(np.sin(np.pi * since / BLINK_SECONDS) ** 2)


def blink(mesh: torch.Tensor, amount: float) -> torch.Tensor:
    """``mesh`` (>=468, 3) with the upper lids moved ``amount`` of the way onto the lower ones."""
    if amount <= 0:
        return mesh
    out = mesh.clone()
    upper, lower, ring = (torch.tensor(i, device=mesh.device) for i in (UPPER_LIDS, LOWER_LIDS, UPPER_RING))
    step = mesh[lower] - mesh[upper]
    out[upper] = mesh[upper] + amount * step
    out[ring] = mesh[ring] + 0.5 * amount * step
    return out


__all__ = ["blink", "blink_amount", "idle_angles", "idle_rotation"]
