"""How a player shows a decoded frame: the display matrix (rotation, flips) and square pixels.

A phone stores its frames as the sensor saw them and records in the container how to turn them (the
display matrix, ``AV_FRAME_DATA_DISPLAYMATRIX``); anamorphic video stores non-square pixels and records
their shape (the sample aspect ratio, SAR). Players apply both. :class:`Display` applies them the way
FFmpeg's own player and command line do (``ffplay`` / ``ffmpeg -autorotate``, fftools' ``get_rotation``):
the angle is ``-av_display_rotation_get(matrix)`` rounded to a degree, and

- 90°:  ``transpose=clock``, or ``cclock_flip`` when the matrix also mirrors (``matrix[3] > 0``);
- 180°: ``hflip`` if ``matrix[0] < 0``, ``vflip`` if ``matrix[4] < 0`` (so a pure mirror is an hflip);
- 270°: ``transpose=cclock``, or ``clock_flip`` when ``matrix[3] < 0``;
- 0°:   ``vflip`` if ``matrix[4] < 0``;
- any other angle: rotated about the centre within the same frame size, the corners black (as FFmpeg's
  ``rotate`` filter).

The SAR is applied first, on the stored pixel grid: the width becomes ``round(width · SAR)`` and the
height is kept (FFmpeg's ``scale=iw*sar:ih``), resampled inside the colour conversion PyAV already does
(one swscale pass), so square-pixel video pays nothing and anamorphic video no extra pass. The turn is
then one OpenCV transpose and/or flip of the RGB frame (a memory pass each, done only when needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import av
import cv2
import numpy as np

#: FFmpeg's fixed-point scale of the display matrix's a, b, c, d entries (16.16)
_ONE = 1 << 16


@dataclass(frozen=True)
class Display:
    """The turn and the pixel shape of one video stream, applied to each decoded frame."""

    rotation: float = 0.0
    """The clockwise turn the display matrix asks for, in degrees in [0, 360) (FFmpeg's ``theta``)."""
    transpose: bool = False
    """Swap rows and columns first (a 90° or 270° turn, with the flips below)."""
    hflip: bool = False
    """Then mirror left–right."""
    vflip: bool = False
    """Then mirror top–bottom."""
    angle: float = 0.0
    """Any other clockwise angle in degrees (rare); 0 when the turn is a multiple of 90°."""
    sar: Fraction = Fraction(1)
    """Sample aspect ratio: a stored pixel's width over its height."""

    @property
    def mirrored(self) -> bool:
        """Whether the shown picture is a mirror image of the stored one (one flip, or a flipped turn)."""
        return (self.transpose + self.hflip + self.vflip) % 2 == 1

    def describe(self) -> str:
        """The turn in words ("turned 90° clockwise", "mirrored left–right", ...); empty for none."""
        if self.angle:
            return f"turned {self.angle:g}° clockwise"
        return {
            (True, True, False): "turned 90° clockwise",
            (True, False, True): "turned 90° anticlockwise",
            (True, False, False): "turned 90° anticlockwise and mirrored top–bottom",
            (True, True, True): "turned 90° clockwise and mirrored top–bottom",
            (False, True, True): "turned 180°",
            (False, True, False): "mirrored left–right",
            (False, False, True): "mirrored top–bottom",
        }.get((self.transpose, self.hflip, self.vflip), "")

    @property
    def is_identity(self) -> bool:
        return not (self.transpose or self.hflip or self.vflip or self.angle) and self.sar == 1

    def square_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of a stored frame once its pixels are square, before the turn."""
        return max(1, round(width * self.sar)), height

    def shown_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) a player shows for a stored ``width`` × ``height`` frame."""
        w, h = self.square_size(width, height)
        return (h, w) if self.transpose else (w, h)

    def to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """The decoded ``frame`` as a player shows it: (H, W, 3) uint8 RGB, upright, square pixels."""
        if self.sar == 1:
            rgb = frame.to_ndarray(format="rgb24")
        else:
            w, h = self.square_size(frame.width, frame.height)
            rgb = frame.to_ndarray(format="rgb24", width=w, height=h, interpolation="BICUBIC")
        return self.turn(rgb)

    def turn(self, rgb: np.ndarray) -> np.ndarray:
        """Apply the turn (transpose, flips, or another angle) to a square-pixel (H, W, C) image."""
        if self.transpose:
            rgb = cv2.transpose(rgb)
        if self.hflip or self.vflip:
            rgb = cv2.flip(rgb, -1 if self.hflip and self.vflip else 1 if self.hflip else 0)
        if self.angle:
            h, w = rgb.shape[:2]
            turn = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), -self.angle, 1.0)
            rgb = cv2.warpAffine(rgb, turn, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        return rgb


def display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's display matrix as 9 int32 (FFmpeg's layout), or None when it has none."""
    for data in frame.side_data:
        if str(data.type).endswith("DISPLAYMATRIX"):
            return np.frombuffer(bytes(data), dtype="<i4", count=9).copy()
    return None


def display_of(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> Display:
    """How a player shows ``frame`` (the first decoded frame of ``stream``): its display matrix and the
    stream's sample aspect ratio (the container's, else the codec's, as ``av_guess_sample_aspect_ratio``)."""
    sar = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
    sar = Fraction(sar) if sar and sar > 0 else Fraction(1)
    matrix = display_matrix(frame)
    if matrix is None:
        return Display(sar=sar)
    return _turn_of(matrix, sar)


def _turn_of(m: np.ndarray, sar: Fraction) -> Display:
    """fftools' autorotate decision for the display matrix ``m`` (see the module docstring)."""
    scale0, scale1 = math.hypot(m[0] / _ONE, m[3] / _ONE), math.hypot(m[1] / _ONE, m[4] / _ONE)
    if scale0 == 0 or scale1 == 0:  # a degenerate matrix: show the frame as stored
        return Display(sar=sar)
    ccw = -math.degrees(math.atan2(m[1] / _ONE / scale1, m[0] / _ONE / scale0))
    theta = -round(ccw)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    shown = {"rotation": float(theta) % 360, "sar": sar}
    if abs(theta - 90) < 1:  # transpose=cclock_flip, or clock (a transpose, then mirrored left-right)
        return Display(transpose=True, hflip=bool(m[3] <= 0), **shown)
    if abs(theta - 180) < 1:
        return Display(hflip=bool(m[0] < 0), vflip=bool(m[4] < 0), **shown)
    if abs(theta - 270) < 1:  # transpose=clock_flip (a transpose mirrored both ways), or cclock
        return Display(transpose=True, hflip=bool(m[3] < 0), vflip=True, **shown)
    if abs(theta) > 1:
        return Display(angle=float(theta), **shown)
    return Display(vflip=bool(m[4] < 0), **shown)
