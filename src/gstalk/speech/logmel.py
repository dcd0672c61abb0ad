"""Log-mel speech features: 80 bands at 100 Hz (librosa), each video frame taking the window of feature
frames centred on it. No weights: they follow the voice more than the words (docs/benchmarks.md), and
remain for datasets prepared with ``--audio-features logmel``."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..media.audio import AUDIO_RATE
from .kind import WindowedKind

MEL_HOP = 160  # 10 ms at 16 kHz
MEL_BANDS = 80


def log_mel(audio: np.ndarray, warp: float = 1.0) -> np.ndarray:
    """(M, 80) float32 log-mel frames at 100 Hz of 16 kHz mono ``audio``; frame m is centred at m · 10 ms.

    ``warp`` != 1 stretches the spectrum along frequency before the mel filterbank (vocal tract length
    perturbation, :func:`warp_spectrum`): formants and harmonics move up by that factor, as for a shorter
    vocal tract."""
    import librosa

    power = np.abs(librosa.stft(audio, n_fft=512, win_length=400, hop_length=MEL_HOP, center=True)) ** 2
    mel = _mel_filters() @ warp_spectrum(power, warp)
    return np.log(mel.T + 1e-5).astype(np.float32)


def warp_spectrum(power: np.ndarray, warp: float) -> np.ndarray:
    """(F, M) power spectrum stretched along frequency by ``warp`` (linear interpolation between bins):
    the vocal tract length perturbation of Jaitly & Hinton (2013). ``warp`` > 1 moves formants and
    harmonics up, as for a shorter vocal tract; 1 returns ``power`` itself."""
    if warp == 1.0:
        return power
    bins = np.arange(power.shape[0], dtype=np.float64)
    source = np.clip(bins / warp, 0, power.shape[0] - 1)
    lo = np.floor(source).astype(int)
    hi = np.minimum(lo + 1, power.shape[0] - 1)
    frac = (source - lo)[:, None]
    return (1 - frac) * power[lo] + frac * power[hi]


@lru_cache(maxsize=1)
def _mel_filters() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=AUDIO_RATE, n_fft=512, n_mels=MEL_BANDS, fmin=55.0, fmax=7600.0)


class LogMelKind(WindowedKind):
    """``logmel``: :func:`log_mel` frames at 100 Hz in windows of ``spec.window`` frames (160 ms by
    default), loudness-normalised (``speech.loudness``)."""

    def frames(self, audio: np.ndarray, warp: float = 1.0) -> np.ndarray:
        return log_mel(np.asarray(audio, np.float32), warp)

    def silence(self) -> np.ndarray:
        if self.spec.normalisation == "utterance":  # a constant input normalises to zero
            return np.zeros((self.spec.window, self.spec.dim), np.float32)
        frames = log_mel(np.zeros(self.spec.rate, np.float32))
        return np.repeat(self.finish(frames)[:1], self.spec.window, axis=0)
