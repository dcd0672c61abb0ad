"""Audio features aligned to video frames: (T, W, C), a window of W feature frames centred on each frame.

- ``logmel`` (default): 80-band log-mel at 100 Hz, computed with librosa; no weights needed.
- ``hubert`` / ``wav2vec2``: the last hidden layer of a speech model loaded with ``transformers`` from a
  local folder (never downloaded), at the model's own rate (50 Hz for the standard models).

Loudness is normalised first, so speech recorded at another level drives the model the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import GstalkError
from .audio import AUDIO_RATE

MEL_HOP = 160  # 10 ms at 16 kHz
MEL_BANDS = 80


@dataclass
class AudioFeatures:
    features: np.ndarray  # (T, W, C) float16
    kind: str
    rate_hz: float  # feature frames per second


def loudness_level(audio: np.ndarray) -> float:
    """RMS of the loud (90th percentile) 50 ms windows."""
    win = AUDIO_RATE // 20
    n = audio.size // win
    if n == 0:
        return 0.0
    rms = np.sqrt(np.mean(audio[: n * win].reshape(n, win).astype(np.float64) ** 2, axis=1))
    return float(np.percentile(rms, 90))


#: RMS of the loud 50 ms windows after loudness normalisation.
TARGET_RMS = 0.05


def loudness_gain(level: float) -> float:
    """The gain that brings audio whose :func:`loudness_level` is ``level`` to :data:`TARGET_RMS`."""
    return TARGET_RMS / level if level > 1e-6 else 1.0


def normalise_loudness(audio: np.ndarray) -> np.ndarray:
    """Scale so that the loud (90th percentile) 50 ms windows have RMS :data:`TARGET_RMS`."""
    return (audio * loudness_gain(loudness_level(audio))).astype(np.float32)


def log_mel(audio: np.ndarray, warp: float = 1.0) -> np.ndarray:
    """(M, 80) log-mel frames at 100 Hz; frame m is centred at m * 10 ms.

    ``warp`` != 1 stretches the spectrum along frequency before the mel filterbank (vocal tract length
    perturbation): formants and harmonics move up by that factor, as for a shorter vocal tract.
    """
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


def with_deltas(frames: np.ndarray) -> np.ndarray:
    """Frames with their first time derivative appended (librosa's 5-frame regression)."""
    import librosa

    if len(frames) < 5:
        return np.concatenate([frames, np.zeros_like(frames)], 1)
    return np.concatenate([frames, librosa.feature.delta(frames, width=5, axis=0)], 1).astype(np.float32)


class SpeechModel:
    """A HuBERT or wav2vec 2.0 model from a local folder (``save_pretrained`` layout), on CPU or CUDA."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        path = Path(path)
        if not (path / "config.json").is_file():
            raise GstalkError(
                f"no speech model at {path} (config.json missing)",
                "pass a folder saved with transformers' save_pretrained (e.g. a local copy of "
                "facebook/hubert-large-ls960-ft); gstalk never downloads models",
            )
        try:
            import transformers
        except ImportError as err:
            raise GstalkError("transformers is not installed", "pip install -e '.[speech]'") from err
        import torch

        try:
            self.model = (
                transformers.AutoModel.from_pretrained(str(path), local_files_only=True).eval().to(device)
            )
        except (OSError, ValueError) as err:
            raise GstalkError(
                f"could not load the speech model at {path}: {err}", "check the folder"
            ) from err
        self.kind = self.model.config.model_type
        self.device = device
        self._torch = torch
        self.stride = int(np.prod(self.model.config.conv_stride))

    @property
    def rate_hz(self) -> float:
        return AUDIO_RATE / self.stride

    @property
    def dim(self) -> int:
        """Channels of the last hidden layer."""
        return int(self.model.config.hidden_size)

    def __call__(self, audio: np.ndarray, chunk_seconds: float = 20.0) -> np.ndarray:
        """(M, C) last-layer features at ``rate_hz``; long audio runs in chunks to bound memory."""
        torch = self._torch
        audio = (audio - audio.mean()) / (audio.std() + 1e-7)  # the processors' zero-mean unit-variance input
        chunk = int(chunk_seconds * AUDIO_RATE) // self.stride * self.stride
        outs = []
        with torch.inference_mode():
            for start in range(0, audio.size, chunk):
                piece = audio[start : start + chunk]
                if piece.size < self.stride * 2:
                    piece = np.pad(piece, (0, self.stride * 2 - piece.size))
                x = torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32))[None].to(self.device)
                outs.append(self.model(x).last_hidden_state[0].float().cpu().numpy())
        feats = np.concatenate(outs)
        expected = int(np.ceil(audio.size / self.stride))
        if feats.shape[0] < expected:
            feats = np.pad(feats, ((0, expected - feats.shape[0]), (0, 0)), mode="edge")
        return feats[:expected]


@lru_cache(maxsize=2)
def speech_model(path: str | Path, device: str = "cpu") -> SpeechModel:
    """The HuBERT / wav2vec 2.0 model in ``path``, loaded once per process."""
    return SpeechModel(path, device)


def frame_windows(frames: np.ndarray, rate_hz: float, n_video: int, fps: float, window: int) -> np.ndarray:
    """(n_video, window, C): for video frame k, the ``window`` feature frames centred on time k / fps.

    Feature frame m is centred at m / rate_hz. Windows running past either end repeat the edge frame.
    """
    centres = np.round(np.arange(n_video) / fps * rate_hz).astype(int)
    offsets = np.arange(window) - window // 2
    idx = np.clip(centres[:, None] + offsets[None, :], 0, len(frames) - 1)
    return frames[idx]


def window_frames(window_ms: float, rate_hz: float) -> int:
    """Feature frames in a window of ``window_ms`` (at least 2)."""
    return max(2, round(window_ms / 1000 * rate_hz))


def feature_frames(
    audio: np.ndarray, kind: str, model_path: str | Path | None = None, device: str = "cpu", warp: float = 1.0
) -> tuple[np.ndarray, float]:
    """(M, C) feature frames of 16 kHz ``audio`` and their rate in Hz (``warp``: see :func:`log_mel`)."""
    if kind == "logmel":
        return log_mel(audio, warp), AUDIO_RATE / MEL_HOP
    if kind in ("hubert", "wav2vec2"):
        if model_path is None:
            raise GstalkError(
                f"--audio-features {kind} needs --speech-model PATH", "or use the default logmel"
            )
        model = speech_model(model_path, device)
        return model(audio), model.rate_hz
    raise GstalkError(f"unknown audio feature kind {kind!r}", "use logmel, hubert or wav2vec2")


def audio_features(
    audio: np.ndarray,
    n_video: int,
    fps: float,
    kind: str = "logmel",
    model_path: str | Path | None = None,
    window_ms: float = 160.0,
    device: str = "cpu",
    normalise: bool = True,
) -> AudioFeatures:
    """Per-video-frame audio features from 16 kHz mono ``audio`` (loudness-normalised unless the caller
    already scaled it, as streaming does)."""
    if normalise:
        audio = normalise_loudness(audio)
    frames, rate = feature_frames(audio, kind, model_path, device)
    window = window_frames(window_ms, rate)
    return AudioFeatures(frame_windows(frames, rate, n_video, fps, window).astype(np.float16), kind, rate)
