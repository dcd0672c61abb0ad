"""MediaPipe face-mesh topology (478 points with irises): ordered contours and index groups.

Left/right are the subject's own. Each contour is a closed loop of consecutive mesh edges.
"""

from __future__ import annotations

import numpy as np

N_LANDMARKS = 478

FACE_OVAL = [10, 109, 67, 103, 54, 21, 162, 127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152,
             377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356, 389, 251, 284, 332, 297, 338]  # fmt: skip
LIPS_OUTER = [0, 37, 39, 40, 185, 61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267]
LIPS_INNER = [13, 82, 81, 80, 191, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312]
LEFT_EYE = [263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466]
RIGHT_EYE = [33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246]
LEFT_BROW = [276, 283, 282, 295, 285, 336, 296, 334, 293, 300]
RIGHT_BROW = [46, 53, 52, 65, 55, 107, 66, 105, 63, 70]
LEFT_IRIS = [473, 474, 475, 476, 477]
RIGHT_IRIS = [468, 469, 470, 471, 472]

# points used for expression measures
RIGHT_EYE_CORNERS, LEFT_EYE_CORNERS = (33, 133), (362, 263)
RIGHT_EYE_LIDS, LEFT_EYE_LIDS = ((160, 144), (159, 145), (158, 153)), ((385, 380), (386, 374), (387, 373))
RIGHT_BROW_MID, LEFT_BROW_MID = (105, 66), (334, 296)
MOUTH_CORNERS = (61, 291)
INNER_LIP_MID = (13, 14)
FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1
OUTER_EYE_CORNERS = (33, 263)
JAW_LEFT, JAW_RIGHT = 397, 172

#: Rigid points for head pose: forehead, nose bridge and tip, eye corners, temples and ears (never jaw or
#: lips, which move with speech, nor eyelids and brows, which move with expression).
STABLE = sorted({
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1,  # midline: forehead, nose bridge, nose tip
    109, 67, 103, 338, 297, 332,  # upper forehead
    33, 133, 362, 263, 130, 359,  # eye corners
    21, 54, 162, 127, 234, 251, 284, 389, 356, 454,  # temples and ears
    98, 327, 64, 294, 49, 279, 114, 343, 217, 437,  # nose wings and sides
    116, 345, 117, 346,  # upper cheekbones
})  # fmt: skip

#: Mean bicanthal width (outer eye corner to outer eye corner) of adults, metres: sets the metric scale.
OUTER_EYE_CORNER_DISTANCE_M = 0.09


def polygon(points: np.ndarray, contour: list[int]) -> np.ndarray:
    """(K, 2) int32 pixel polygon of ``contour`` from (478, >=2) landmarks in pixels."""
    return np.round(points[contour, :2]).astype(np.int32)
