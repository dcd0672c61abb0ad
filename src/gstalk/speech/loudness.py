"""Loudness normalisation of speech before the features that depend on level (log-mel, a speech-model
folder): the loud 50 ms windows are brought to one RMS, so speech recorded at another level drives the
model the same way. Whisper's states take none (its encoder was trained on every level)."""

from __future__ import annotations

import numpy as np

from ..media.audio import AUDIO_RATE

#: RMS of the loud 50 ms windows after loudness normalisation.
TARGET_RMS = 0.05


def loudness_level(audio: np.ndarray) -> float:
    """RMS of the loud (90th percentile) 50 ms windows of 16 kHz mono ``audio`` (float, any length);
    0 for audio shorter than one window."""
    win = AUDIO_RATE // 20
    n = audio.size // win
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(audio[: n * win].reshape(n, win).astype(np.float64) ** 2, axis=1))
    return float(np.percentile(rms, 90))


def loudness_gain(level: float) -> float:
    """The gain that brings audio whose :func:`loudness_level` is ``level`` to :data:`TARGET_RMS` (1 for
    silence)."""
    return TARGET_RMS / level if level > 1e-6 else 1.0


def normalise_loudness(audio: np.ndarray) -> np.ndarray:
    """(N,) float32 ``audio`` scaled so that its loud (90th percentile) 50 ms windows have RMS
    :data:`TARGET_RMS`."""
    return (audio * loudness_gain(loudness_level(audio))).astype(np.float32)
