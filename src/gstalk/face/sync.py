"""The project's weight-free lip-sync measure: how closely the mouth opening follows the loudness of the
speech, at the best time offset.

Per video frame: the mouth opening (inner-lip gap over the outer-eye-corner distance, from the landmarks)
and the audio energy (``media.audio.audio_energy``: log RMS of the sound under the frame). Their Pearson
correlation, searched over offsets, is the measure; the offset that maximises it is the clip's
audio–video offset, as SyncNet's is in the data pipelines of lip-sync systems (Wav2Lip, LatentSync), with
no weights. ``eval`` reports it for renders, ``prepare`` checks every clip with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .landmarks import CHIN, INNER_LIP_MID, NOSE_TIP, OUTER_EYE_CORNERS

#: fewest frames with a face and sound for a correlation to mean anything
MIN_FRAMES = 10


def mouth_opening(landmarks: np.ndarray | None) -> float:
    """Inner-lip gap over the outer-eye-corner distance of one face's (478, >=2) landmarks (any pixel
    units); NaN when there is no face."""
    if landmarks is None:
        return float("nan")
    gap = np.linalg.norm(landmarks[INNER_LIP_MID[0]] - landmarks[INNER_LIP_MID[1]])
    return float(gap / np.linalg.norm(landmarks[OUTER_EYE_CORNERS[0]] - landmarks[OUTER_EYE_CORNERS[1]]))


def mouth_openings(landmarks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T,) :func:`mouth_opening` of (T, 478, >=2) landmarks; NaN where ``valid`` (T,) is False."""
    lm = landmarks[..., :2].astype(np.float64)
    gap = np.linalg.norm(lm[:, INNER_LIP_MID[0]] - lm[:, INNER_LIP_MID[1]], axis=-1)
    eyes = np.linalg.norm(lm[:, OUTER_EYE_CORNERS[0]] - lm[:, OUTER_EYE_CORNERS[1]], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid & (eyes > 0), gap / eyes, np.nan)


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


def correlations(energy: np.ndarray, opening: np.ndarray, max_offset: int) -> np.ndarray:
    """(2 · max_offset + 1,) float64: the correlation of ``energy[k]`` with ``opening[k + off]`` for
    ``off = -max_offset … max_offset`` over the frames where both are finite; NaN where fewer than
    :data:`MIN_FRAMES` overlap or either series is constant there."""
    n = min(len(energy), len(opening))
    energy, opening = np.asarray(energy[:n], float), np.asarray(opening[:n], float)
    out = np.full(2 * max_offset + 1, np.nan)
    for i, off in enumerate(range(-max_offset, max_offset + 1)):
        if abs(off) >= n:  # too few frames for this offset
            continue
        if off >= 0:
            e, m = energy[: n - off], opening[off:]
        else:
            e, m = energy[-off:], opening[: n + off]
        ok = np.isfinite(e) & np.isfinite(m)
        if ok.sum() < MIN_FRAMES or np.std(e[ok]) == 0 or np.std(m[ok]) == 0:
            continue
        out[i] = float(np.corrcoef(e[ok], m[ok])[0, 1])
    return out


def lip_sync(energy: np.ndarray, opening: np.ndarray, max_offset: int = 5) -> SyncMeasure:
    """How well mouth opening (T,) follows the audio energy (T,), searching offsets of ±``max_offset``
    frames (NaN entries are left out)."""
    r = correlations(energy, opening, max_offset)
    at_zero = r[max_offset]
    if not np.isfinite(r).any():
        return SyncMeasure(float("nan"), 0, at_zero)
    best = int(np.nanargmax(r))
    return SyncMeasure(float(r[best]), best - max_offset, float(at_zero))


# --- the clip's audio–video offset ---------------------------------------------------------------------
#: frames the opening and the energy are detrended over (a centred moving average is subtracted): about
#: half a second at 25 fps, which removes slow changes (head pitch, distance, loudness) and keeps syllables
DETREND_FRAMES = 13
#: a best correlation below this is not evidence of sync, whatever chance says
MIN_CORRELATION = 0.2
#: a best correlation is clear evidence when it stands this many standard deviations above the best
#: correlations of the sound moved far away (chance). On the corpus's 31 clips and their shifted copies
#: (``benchmarks/sync_offsets.py``), 4 let an energy-based estimate move a 4 s clip 7 frames from where
#: a prior-based one and the corpus's README put it; 5 moved none wrongly.
CLEAR_Z = 5.0


def jaw_openings(landmarks: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(T,) float64 jaw opening of (T, 478, >=2) landmarks: the chin's distance from the nose tip over the
    outer-eye-corner distance (both references move with the skull, not with speech); NaN where ``valid``
    (T,) is False. It follows loudness more closely than the inner-lip gap (see ``estimate_offset``)."""
    lm = landmarks[..., :2].astype(np.float64)
    jaw = np.linalg.norm(lm[:, CHIN] - lm[:, NOSE_TIP], axis=-1)
    eyes = np.linalg.norm(lm[:, OUTER_EYE_CORNERS[0]] - lm[:, OUTER_EYE_CORNERS[1]], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid & (eyes > 0), jaw / eyes, np.nan)


def detrend(x: np.ndarray, frames: int = DETREND_FRAMES) -> np.ndarray:
    """(T,) ``x`` minus its centred moving average over ``frames`` (NaN entries stay NaN and are left out
    of their neighbours' averages)."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    kernel = np.ones(frames)
    total = np.convolve(np.where(ok, x, 0.0), kernel, mode="same")
    count = np.convolve(ok.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, x - total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class OffsetEstimate:
    """The audio–video offset of a clip, from the lip-sync measure."""

    offset_frames: int
    """The offset with the best correlation; positive: the mouth moves after the sound."""
    correlation: float
    """The correlation there."""
    correlation_at_zero: float
    chance: float
    """The best correlation found when the sound is moved far away from the picture (95th percentile over
    circular shifts of more than the search range): what no sync at all scores on this clip."""
    at_edge: bool
    """The best offset is the largest searched: the real one may be further."""
    frames: int
    """Frames with a face and sound that were compared."""
    chance_mean: float = float("nan")
    """Mean of the best correlations by chance (the same trials as ``chance``)."""
    chance_std: float = float("nan")
    """Their standard deviation."""
    curve: tuple[float, ...] = ()
    """The correlation at every offset searched, from ``-max_offset`` to ``max_offset`` (NaN where too
    few frames overlap)."""

    @property
    def z(self) -> float:
        """How many standard deviations of chance the best correlation stands above chance's mean (NaN
        when the clip is too short to say)."""
        if not (np.isfinite(self.chance_std) and self.chance_std > 0):
            return float("nan")
        return float((self.correlation - self.chance_mean) / self.chance_std)

    @property
    def significant(self) -> bool:
        """The best correlation is clear evidence: :data:`CLEAR_Z` standard deviations above chance's mean,
        above chance's 95th percentile, and above :data:`MIN_CORRELATION`."""
        return bool(self.z >= CLEAR_Z and self.correlation > max(self.chance, MIN_CORRELATION))

    def best_within(self, centre: int, half_width: int) -> float:
        """The best correlation at offsets ``centre ± half_width`` frames (NaN when none was measured)."""
        m = (len(self.curve) - 1) // 2
        lo, hi = max(0, m + centre - half_width), min(len(self.curve), m + centre + half_width + 1)
        values = np.asarray(self.curve[lo:hi], float)
        return float(np.nanmax(values)) if np.isfinite(values).any() else float("nan")

    def as_dict(self) -> dict:
        finite = lambda v: round(float(v), 4) if np.isfinite(v) else None  # noqa: E731
        return {
            "offset_frames": self.offset_frames,
            "correlation": finite(self.correlation),
            "correlation_at_zero": finite(self.correlation_at_zero),
            "chance": finite(self.chance),
            "z": None if not np.isfinite(self.z) else round(self.z, 2),
            "at_edge": self.at_edge,
            "frames": self.frames,
        }


def estimate_offset(
    energy: np.ndarray, opening: np.ndarray, max_offset: int, trials: int = 200, seed: int = 0
) -> OffsetEstimate:
    """The offset, within ±``max_offset`` frames, at which the audio ``energy`` (T,) best predicts the
    mouth ``opening`` (T,) (both per frame, NaN where unknown): :func:`correlations` of the two series,
    each :func:`detrend`-ed, with chance from ``trials`` circular shifts of the energy by more than the
    search range (seeded: the same clip gives the same answer). ``energy`` may be any series made from
    the sound alone, such as the lip motion a speech model predicts from it (``prepare.sync``).

    Measured on the first 20 s of the six shared clips (``benchmarks/sync_offsets.py``, with
    ``media.audio.speech_energy`` and :func:`jaw_openings`): moving the sound ±3 to ±12 frames moves the
    estimate by exactly as much in all 40 cases on the five clips where the peak is above chance; on the
    sixth (8 s, below chance) none is found, and prepare calls it inconclusive. Eval's pair (broadband
    energy, inner-lip gap, no detrending) finds 29 of the 48 within a frame.
    """
    e, m = detrend(energy), detrend(opening)
    r = correlations(e, m, max_offset)
    frames = int((np.isfinite(e) & np.isfinite(m)).sum())
    if not np.isfinite(r).any():
        return OffsetEstimate(0, float("nan"), float("nan"), float("nan"), False, frames)
    best = int(np.nanargmax(r))
    peaks = _chance_peaks(e, m, max_offset, trials, seed)
    ok = len(peaks) > 1
    return OffsetEstimate(
        offset_frames=best - max_offset,
        correlation=float(r[best]),
        correlation_at_zero=float(r[max_offset]),
        chance=float(np.percentile(peaks, 95)) if ok else float("nan"),
        at_edge=best in (0, len(r) - 1),
        frames=frames,
        chance_mean=float(np.mean(peaks)) if ok else float("nan"),
        chance_std=float(np.std(peaks)) if ok else float("nan"),
        curve=tuple(float(v) for v in r),
    )


def _chance_peaks(e: np.ndarray, m: np.ndarray, max_offset: int, trials: int, seed: int) -> np.ndarray:
    """The best correlation over the search with ``e`` rolled by more than ``2 · max_offset + 5``, for
    each of ``trials`` random rolls (empty when the clip is too short to roll that far)."""
    n = min(len(e), len(m))
    guard = 2 * max_offset + 5
    if n <= 2 * guard:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    peaks = []
    for shift in rng.integers(guard, n - guard, trials):
        r = correlations(np.roll(e[:n], int(shift)), m[:n], max_offset)
        if np.isfinite(r).any():
            peaks.append(np.nanmax(r))
    return np.asarray(peaks)


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
