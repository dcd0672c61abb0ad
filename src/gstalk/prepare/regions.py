"""Per-frame region label maps from landmark polygons, person segmentation and colour cues.

The labels are one :class:`Region` enum, stored as a uint8 map per frame; never colour codes.

- face skin, brows, eyes, lips, mouth interior: filled landmark polygons (mouth interior is the inside of
  the inner lip contour: teeth and tongue).
- person vs background: MediaPipe selfie segmentation (its model ships in the wheel).
- neck: person pixels under the jaw, within the jaw's width, whose colour is closer to the face's skin
  than to the clothes seen at the bottom of the frame.
- hair: person pixels outside the face above the jaw line, plus long hair beside the neck and fringe over
  the forehead whose colour is closer to the hair seen above the forehead than to skin or clothes.
- torso: the rest of the person.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np

from ..face.landmarks import (
    CHIN,
    FACE_OVAL,
    FOREHEAD,
    JAW_LEFT,
    JAW_RIGHT,
    LEFT_BROW,
    LEFT_EYE,
    LIPS_INNER,
    LIPS_OUTER,
    RIGHT_BROW,
    RIGHT_EYE,
    polygon,
)
from ..regions import Region


class PersonSegmenter:
    """MediaPipe selfie segmentation: per-pixel person probability."""

    def __init__(self) -> None:
        import mediapipe as mp

        from ..face.track import quiet_stderr

        with quiet_stderr():
            self._seg = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return self._seg.process(np.ascontiguousarray(rgb)).segmentation_mask

    def close(self) -> None:
        self._seg.close()


def _fill(mask_shape, pts: np.ndarray) -> np.ndarray:
    m = np.zeros(mask_shape, np.uint8)
    cv2.fillPoly(m, [pts], 1)
    return m.astype(bool)


def _colour_distance(lab: np.ndarray, samples: np.ndarray, lightness_weight: float = 1.0) -> np.ndarray:
    """Distance of every pixel's Lab colour to a sample set, in units of the set's spread.

    ``lightness_weight`` < 1 discounts shading, which changes lightness across one surface (a neck in the
    shadow of the chin) far more than it changes hue.
    """
    if samples.shape[0] < 10:
        return np.full(lab.shape[:2], np.inf, np.float32)
    mean = samples.mean(0)
    inv_std = 1.0 / ((samples.std(0) + 4.0) * np.array([1.0 / lightness_weight, 1.0, 1.0], np.float32))
    z = (lab - mean) * inv_std
    return np.sqrt(np.einsum("...c,...c->...", z, z))


def _feature_masks(landmarks: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """(H, W) bool masks of the face oval, mouth interior, lips, eyes and brows: the landmark polygons."""
    face = _fill(shape, polygon(landmarks, FACE_OVAL))
    mouth = _fill(shape, polygon(landmarks, LIPS_INNER))
    lips = _fill(shape, polygon(landmarks, LIPS_OUTER)) & ~mouth
    eyes = _fill(shape, polygon(landmarks, LEFT_EYE)) | _fill(shape, polygon(landmarks, RIGHT_EYE))
    brows = _fill(shape, polygon(landmarks, LEFT_BROW)) | _fill(shape, polygon(landmarks, RIGHT_BROW))
    return face, mouth, lips, eyes, brows


def segment_regions(rgb: np.ndarray, landmarks: np.ndarray | None, person: np.ndarray) -> np.ndarray:
    """(H, W) uint8 :class:`Region` labels for one frame.

    ``landmarks``: (478, >=2) pixels, or None when tracking failed (then only person/background is known,
    and the person is labelled torso). ``person``: (H, W) person probability in [0, 1].
    """
    h, w = rgb.shape[:2]
    labels = np.zeros((h, w), np.uint8)
    is_person = person > 0.5
    labels[is_person] = Region.TORSO
    if landmarks is None:
        return labels

    face, mouth, lips, eyes, brows = _feature_masks(landmarks, (h, w))
    # colour cues are coarse: compare colours at half resolution, then upsample the distance maps
    small = cv2.resize(rgb, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
    lab_small = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab = cv2.resize(lab_small, (w, h), interpolation=cv2.INTER_NEAREST)
    face_h = float(np.linalg.norm(landmarks[CHIN, :2] - landmarks[FOREHEAD, :2]))
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]

    def distance(samples: np.ndarray, lightness_weight: float = 1.0) -> np.ndarray:
        d = _colour_distance(lab_small, samples, lightness_weight)
        return (
            cv2.resize(d, (w, h), interpolation=cv2.INTER_LINEAR)
            if np.isfinite(d).all()
            else np.full((h, w), np.inf, np.float32)
        )

    # jaw line: the lower half of the face oval, extended sideways; "below the jaw" is under it
    oval = polygon(landmarks, FACE_OVAL)
    jaw_y = _lower_envelope(oval, w, h)
    below_jaw = ys > jaw_y[None, :]
    x_left = min(landmarks[JAW_LEFT, 0], landmarks[JAW_RIGHT, 0])
    x_right = max(landmarks[JAW_LEFT, 0], landmarks[JAW_RIGHT, 0])
    margin = 0.1 * (x_right - x_left)
    neck_column = (xs > x_left - margin) & (xs < x_right + margin)
    chin_y = landmarks[CHIN, 1]
    top_y = landmarks[FOREHEAD, 1]

    # colour models: skin from the cheeks (face minus features), clothes from the bottom rows,
    # hair from the person just above the forehead
    skin_zone = face & ~cv2.dilate((eyes | brows | lips | mouth).astype(np.uint8), np.ones((9, 9))).astype(
        bool
    )
    skin_samples = lab[skin_zone][::7]
    skin = distance(skin_samples)
    skin_shaded = distance(skin_samples, lightness_weight=1 / 3)
    bottom = is_person & (ys > h - max(4, h // 12)) & ~neck_column
    clothes = distance(lab[bottom][::3])
    clothes_shaded = distance(lab[bottom][::3], lightness_weight=1 / 3)
    above_forehead = is_person & ~face & (ys < top_y) & (ys > top_y - 0.35 * face_h)
    hair_d = distance(lab[above_forehead][::3])

    neck_zone = is_person & ~face & below_jaw & neck_column & (ys < chin_y + 0.9 * face_h)
    neck = neck_zone & (skin_shaded < 3.0) & (skin_shaded < clothes_shaded)
    neck = _largest_component_touching(neck, face)
    upper = is_person & ~face & ~below_jaw
    beside_neck = is_person & ~face & below_jaw & ~neck_column & (ys < chin_y + 1.2 * face_h)
    long_hair = beside_neck & (hair_d < np.minimum(clothes, skin))
    # ears and temples: skin-coloured, beside the face, from brow height down (higher up, a skin-like
    # colour is a highlight in the hair, and labelling it face would leave a hole in the hair layer)
    ear_band = ys > top_y + 0.2 * face_h
    skin_beside_face = upper & ear_band & (skin < hair_d) & (skin < 3.0)
    fringe = face & (ys < landmarks[FOREHEAD, 1] + 0.25 * face_h) & (hair_d < 0.5 * skin) & ~(brows | eyes)

    labels[upper] = Region.HAIR
    labels[long_hair] = Region.HAIR
    labels[neck] = Region.NECK
    labels[face | skin_beside_face] = Region.FACE
    labels[fringe] = Region.HAIR
    labels[brows] = Region.BROWS
    labels[eyes] = Region.EYES
    labels[lips] = Region.LIPS
    labels[mouth] = Region.MOUTH_INTERIOR
    return labels


def _lower_envelope(poly: np.ndarray, w: int, h: int) -> np.ndarray:
    """Per column, the lowest y of the polygon's outline; extended flat beyond its ends."""
    env = np.full(w, -1.0)
    pts = np.concatenate([poly, poly[:1]])
    for (x0, y0), (x1, y1) in itertools.pairwise(pts):
        if x0 == x1:
            continue
        xa, xb = sorted((int(x0), int(x1)))
        xr = np.arange(max(xa, 0), min(xb, w - 1) + 1)
        y = y0 + (xr - x0) * (y1 - y0) / (x1 - x0)
        env[xr] = np.maximum(env[xr], y)
    known = np.flatnonzero(env >= 0)
    if known.size == 0:
        return np.full(w, float(h))
    # beyond the face's sides the jaw line continues at the height of the face's widest point
    mid = poly[np.argmin(poly[:, 0]), 1], poly[np.argmax(poly[:, 0]), 1]
    env[: known[0]] = mid[0]
    env[known[-1] + 1 :] = mid[1]
    return env


def _largest_component_touching(mask: np.ndarray, other: np.ndarray) -> np.ndarray:
    """The connected part of ``mask`` that touches ``other`` (dilated), largest first; empty if none."""
    n, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    near = cv2.dilate(other.astype(np.uint8), np.ones((7, 7))).astype(bool)
    touching = np.unique(comp[near & mask])
    touching = touching[touching > 0]
    if touching.size == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(comp.ravel())
    return comp == touching[np.argmax(sizes[touching])]
