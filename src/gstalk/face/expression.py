"""Per-frame expression features from pose-normalised landmarks.

Explicit measures (each a float per frame): eye openness per eye, blink (0 open to 1 closed, the AU45
role), brow raise, mouth opening and lip width. Distances are in units of the canonical face's outer eye
corner distance, so they do not depend on how far the head is.

The implicit code: MediaPipe's 52 blendshapes when a landmarker bundle was given, otherwise the leading
principal components of the pose-normalised landmarks, fitted on the training frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .landmarks import (
    INNER_LIP_MID,
    LEFT_BROW_MID,
    LEFT_EYE_CORNERS,
    LEFT_EYE_LIDS,
    MOUTH_CORNERS,
    OUTER_EYE_CORNERS,
    RIGHT_BROW_MID,
    RIGHT_EYE_CORNERS,
    RIGHT_EYE_LIDS,
)

EXPLICIT = ("eye_open_right", "eye_open_left", "blink", "brow_raise", "mouth_open", "lip_width")


@dataclass
class ExpressionFeatures:
    explicit: np.ndarray  # (T, 6) float32, columns EXPLICIT
    code: np.ndarray  # (T, K) float32 implicit expression code
    code_kind: str  # "blendshapes" or "pca"
    pca_mean: np.ndarray | None = None  # (478 * 3,) when code_kind == "pca"
    pca_basis: np.ndarray | None = None  # (K, 478 * 3)


def _dist(p: np.ndarray, a: int, b: int) -> np.ndarray:
    return np.linalg.norm(p[:, a] - p[:, b], axis=-1)


def _eye_openness(p: np.ndarray, lids, corners) -> np.ndarray:
    return np.mean([_dist(p, a, b) for a, b in lids], axis=0) / _dist(p, *corners)


def explicit_features(normalised: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T, 6) features from (T, 478, 3) pose-normalised landmarks; invalid frames are 0."""
    unit = _dist(normalised, *OUTER_EYE_CORNERS)
    unit = np.where(unit > 0, unit, 1.0)
    right = _eye_openness(normalised, RIGHT_EYE_LIDS, RIGHT_EYE_CORNERS)
    left = _eye_openness(normalised, LEFT_EYE_LIDS, LEFT_EYE_CORNERS)
    openness = 0.5 * (left + right)
    ref = np.percentile(openness[valid], 90) if valid.any() else 1.0
    blink = np.clip(1.0 - openness / max(ref, 1e-6), 0.0, 1.0)
    brow = (
        0.5
        * (
            _dist(normalised, RIGHT_BROW_MID[0], RIGHT_EYE_LIDS[1][0])
            + _dist(normalised, LEFT_BROW_MID[0], LEFT_EYE_LIDS[1][0])
        )
        / unit
    )
    brow_raise = brow - (np.median(brow[valid]) if valid.any() else 0.0)
    mouth_open = _dist(normalised, *INNER_LIP_MID) / unit
    lip_width = _dist(normalised, *MOUTH_CORNERS) / unit
    feats = np.stack([right, left, blink, brow_raise, mouth_open, lip_width], 1).astype(np.float32)
    feats[~valid] = 0
    return feats


def pca_code(normalised: np.ndarray, valid: np.ndarray, fit_frames: np.ndarray, k: int = 16):
    """Scores of the k leading principal components (unit variance over the fitting frames)."""
    flat = normalised.reshape(len(normalised), -1).astype(np.float64)
    fit = flat[fit_frames[valid[fit_frames]]]
    mean = fit.mean(0)
    _, s, vt = np.linalg.svd(fit - mean, full_matrices=False)
    k = min(k, vt.shape[0])
    std = s[:k] / np.sqrt(max(len(fit) - 1, 1))
    basis = vt[:k] / np.where(std > 0, std, 1.0)[:, None]
    code = ((flat - mean) @ basis.T).astype(np.float32)
    code[~valid] = 0
    return code, mean.astype(np.float32), basis.astype(np.float32)


def expression_features(
    normalised: np.ndarray,
    valid: np.ndarray,
    train_frames: np.ndarray,
    blendshapes: np.ndarray | None = None,
    pca_components: int = 16,
) -> ExpressionFeatures:
    explicit = explicit_features(normalised, valid)
    if blendshapes is not None:
        return ExpressionFeatures(explicit, blendshapes.astype(np.float32), "blendshapes")
    code, mean, basis = pca_code(normalised, valid, train_frames, pca_components)
    return ExpressionFeatures(explicit, code, "pca", mean, basis)
