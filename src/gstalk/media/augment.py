"""Speech augmentation for learning lip motion that holds for other voices, rooms and microphones.

One :class:`Augmentation` is a random draw of: speed (resampling, which moves pitch and formants with it,
as Kaldi's speed perturbation), a vocal-tract-length warp of the spectrum (applied by the log-mel
features, see ``features.log_mel``), gain, the microphone and line (a high-pass and a low-pass filter of
random corners: recordings without bass, telephone bandwidth), room reverberation (an exponentially
decaying noise impulse response of a random RT60) and additive noise (white, pink or babble made from
the speech itself) at a random signal-to-noise ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, fftconvolve, sosfilt

from .audio import AUDIO_RATE


@dataclass(frozen=True)
class Augmentation:
    speed: float = 1.0
    """> 1 faster: the clip is shorter by this factor, and its pitch and formants higher."""
    warp: float = 1.0
    """Vocal tract length warp of the spectrum (1: none)."""
    gain_db: float = 0.0
    rt60: float = 0.0
    """Reverberation time in seconds (0: dry)."""
    snr_db: float | None = None
    """Signal-to-noise ratio of the added noise (None: no noise)."""
    noise: str = "white"
    """white, pink or babble."""
    highpass_hz: float | None = None
    """Corner of a 4th-order high-pass filter (None: none)."""
    lowpass_hz: float | None = None
    """Corner of a 4th-order low-pass filter (None: none)."""


def random_augmentation(rng: np.random.Generator) -> Augmentation:
    return Augmentation(
        speed=float(rng.uniform(0.88, 1.12)),
        warp=float(rng.uniform(0.85, 1.18)),
        gain_db=float(rng.uniform(-12, 12)),
        rt60=float(rng.uniform(0.15, 0.7)) if rng.random() < 0.5 else 0.0,
        snr_db=float(rng.uniform(5, 30)) if rng.random() < 0.7 else None,
        noise=str(rng.choice(["white", "pink", "babble"])),
        highpass_hz=float(np.exp(rng.uniform(np.log(50), np.log(350)))) if rng.random() < 0.5 else None,
        lowpass_hz=float(rng.uniform(3400, 7000)) if rng.random() < 0.3 else None,
    )


def apply(audio: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """The waveform part of ``aug`` applied to 16 kHz mono ``audio`` (the warp is the features' job)."""
    out = np.asarray(audio, np.float32)
    if aug.speed != 1.0:
        import librosa

        out = librosa.resample(out, orig_sr=AUDIO_RATE, target_sr=round(AUDIO_RATE / aug.speed))
    for corner, kind in ((aug.highpass_hz, "highpass"), (aug.lowpass_hz, "lowpass")):
        if corner is not None:
            out = sosfilt(butter(4, corner, kind, fs=AUDIO_RATE, output="sos"), out).astype(np.float32)
    if aug.rt60 > 0:
        out = fftconvolve(out, room_response(aug.rt60, rng))[: out.size].astype(np.float32)
    if aug.snr_db is not None:
        noise = _noise(aug.noise, out, rng)
        power = np.mean(out.astype(np.float64) ** 2) + 1e-12
        noise *= np.sqrt(power / (np.mean(noise**2) + 1e-12) / 10 ** (aug.snr_db / 10))
        out = out + noise.astype(np.float32)
    return (out * 10 ** (aug.gain_db / 20)).astype(np.float32)


def room_response(rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: the direct path, then decaying noise (−60 dB at ``rt60``)."""
    n = max(2, int(rt60 * AUDIO_RATE))
    t = np.arange(n) / AUDIO_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: int(0.003 * AUDIO_RATE)] = 0  # the first reflections arrive a few milliseconds late
    h = tail / (np.sqrt(np.sum(tail**2)) + 1e-12) * 0.5
    h[0] = 1.0
    return h.astype(np.float32)


def _noise(kind: str, speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = speech.size
    if kind == "babble" and n > AUDIO_RATE:  # several time-shifted, reversed copies of the speech
        return sum(np.roll(speech[::-1], int(rng.integers(AUDIO_RATE // 2, n))) for _ in range(4)).astype(
            np.float64
        )
    white = rng.standard_normal(n)
    if kind == "pink":
        spectrum = np.fft.rfft(white)
        spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
        return np.fft.irfft(spectrum, n)
    return white
