"""The region labels of a frame: one enum, stored as uint8 maps, never colour codes."""

from __future__ import annotations

import enum

import numpy as np


class Region(enum.IntEnum):
    BACKGROUND = 0
    FACE = 1
    BROWS = 2
    EYES = 3
    LIPS = 4
    MOUTH_INTERIOR = 5
    HAIR = 6
    NECK = 7
    TORSO = 8


#: RGB colours used only to draw label maps for people (contact sheets, reports).
REGION_COLOURS = np.array(
    [[0, 0, 0], [230, 180, 140], [120, 70, 30], [60, 160, 255], [220, 40, 60], [255, 240, 0],
     [150, 60, 200], [60, 200, 120], [40, 90, 200]],
    dtype=np.uint8,
)  # fmt: skip

#: The regions that belong to the head model (rendered by Gaussians), and the ones composited from pixels.
HEAD_REGIONS = (Region.FACE, Region.BROWS, Region.EYES, Region.LIPS, Region.MOUTH_INTERIOR)
PIXEL_REGIONS = (Region.HAIR, Region.NECK, Region.TORSO, Region.BACKGROUND)


def colourise(labels: np.ndarray) -> np.ndarray:
    """RGB drawing of a label map for people to look at."""
    return REGION_COLOURS[labels]
