"""A kind of speech feature: how new audio becomes the per-frame feature windows a dataset's model reads,
and what that costs a stream in lookahead, history and warm-up.

Every consumer (prepare, training's augmented copies, ``gstalk render``, streaming, serving, evaluation)
goes through one :class:`FeatureKind` built from the dataset's ``data.AudioSpec`` by
``speech.feature_kind``, so the model sees at render time what it saw in training. The kinds:

- ``whisper`` (``speech.whisper.WhisperKind``): Whisper's encoder states, in blocks that stream;
- ``logmel`` (``speech.logmel.LogMelKind``): 80-band log-mel at 100 Hz, no weights;
- ``hubert`` / ``wav2vec2`` (``speech.folder.FolderKind``): a speech model from a local folder.

The last two are *windowed* kinds (:class:`WindowedKind`): feature frames of the whole input at the
model's rate, loudness-normalised first, each video frame taking the window centred on it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..data.manifest import AudioSpec
from .loudness import normalise_loudness


class FeatureKind:
    """One kind of speech feature, computed for new 16 kHz mono audio exactly as ``spec`` says.

    ``speech_model``: the folder of the model when the kind needs one (checked by ``speech.feature_kind``
    before a kind is made); ``device``: where a speech model runs (``cpu`` or ``cuda``)."""

    #: a stream scales its audio from its first second (loudness normalisation) before any feature
    loudness_gate: bool = True
    #: each frame's features are the same whichever range they were computed in (a stream may keep them)
    exact_frames: bool = False

    def __init__(self, spec: AudioSpec, speech_model: Path | None = None, device: str = "cpu") -> None:
        self.spec = spec
        self.speech_model = Path(speech_model) if speech_model is not None else None
        self.device = device

    # --- timing, for streams ---------------------------------------------------------------------
    def lookahead_seconds(self) -> float:
        """Audio needed beyond a frame's own time before its features can be computed (worst case)."""
        return self.spec.window_seconds / 2

    def ready_seconds(self, k: int, fps: float) -> float:
        """Seconds of audio from the stream's start that frame ``k``'s features read."""
        return k / fps + self.spec.window_seconds / 2

    def history_seconds(self) -> float:
        """Audio before a frame's own time that its features read (worst case)."""
        return self.spec.window_seconds / 2

    def stream_margin(self, fps: float) -> int:
        """Frames computed before the first one a stream needs, so that the edge of a segment (an STFT's
        padding) never reaches a frame that is used."""
        return math.ceil(self.spec.window_seconds * fps) + 1

    def end_padding(self, lookahead: float) -> int:
        """Samples of silence a stream appends to its audio when it ends, so the last frames' windows are
        whole (``lookahead``: the stream's, seconds)."""
        return int(lookahead * self.spec.rate) + self.spec.rate // 10

    def stream_stats(self, first_second: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-channel (mean, std) a stream normalises with, from its first second of (scaled) audio; None
        when the kind takes no such normalisation."""
        return None

    # --- features --------------------------------------------------------------------------------
    def compute(self, audio: np.ndarray, n_frames: int, fps: float, warp: float = 1.0) -> np.ndarray:
        """(n_frames, window, dim) float16 features of 16 kHz mono ``audio`` (sample 0 at frame 0's time),
        exactly as prepared ones. ``warp`` != 1: the vocal-tract-length augmentation of training."""
        raise NotImplementedError

    def compute_range(self, audio: np.ndarray, audio_start: int, first: int, count: int, fps: float,
                      stats: tuple[np.ndarray, np.ndarray] | None = None,
                      warp: float = 1.0) -> np.ndarray:  # fmt: skip
        """(count, window, dim) float16 features of video frames ``first .. first + count`` of a stream of
        which ``audio`` holds samples ``audio_start ..`` (already loudness-scaled by the stream). ``stats``:
        the stream's (mean, std) (:meth:`stream_stats`)."""
        raise NotImplementedError

    def silence(self) -> np.ndarray | None:
        """(window, dim) float32 features of silence, or None when they need weights that are not at
        hand."""
        return None


class WindowedKind(FeatureKind):
    """Feature frames of the whole input at ``spec.feature_rate_hz`` (loudness-normalised first, then
    optionally normalised per utterance and given deltas), each video frame taking the ``spec.window``
    frames centred on it (:func:`frame_windows`)."""

    def frames(self, audio: np.ndarray, warp: float = 1.0) -> np.ndarray:
        """(M, C) raw feature frames of (already loudness-scaled) 16 kHz mono ``audio`` at the spec's rate,
        before normalisation and deltas."""
        raise NotImplementedError

    def finish(self, frames: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Normalise raw ``frames`` (with ``stats`` = (mean, std) per channel when given, else the frames'
        own) and append deltas, as the spec says."""
        if self.spec.normalisation == "utterance":
            mean, std = stats if stats is not None else (frames.mean(0), frames.std(0))
            frames = ((frames - mean) / np.maximum(std, 1e-3)).astype(np.float32)
        return with_deltas(frames) if self.spec.deltas else frames

    def windows(self, frames: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
        """(n_frames, window, dim) float16: the window of finished ``frames`` centred on each video frame."""
        return frame_windows(frames, self.spec.feature_rate_hz, n_frames, fps, self.spec.window).astype(
            np.float16
        )

    def stream_stats(self, first_second: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        if self.spec.normalisation != "utterance":
            return None
        first = self.frames(first_second)
        return first.mean(0), first.std(0)

    def compute(self, audio: np.ndarray, n_frames: int, fps: float, warp: float = 1.0) -> np.ndarray:
        frames = self.frames(normalise_loudness(audio), warp)
        return self.windows(self.finish(frames), n_frames, fps)

    def compute_range(self, audio: np.ndarray, audio_start: int, first: int, count: int, fps: float,
                      stats: tuple[np.ndarray, np.ndarray] | None = None,
                      warp: float = 1.0) -> np.ndarray:  # fmt: skip
        """Computed on the audio from frame ``first``'s time on: close to, not bit-identical with, a
        whole-file computation near the segment's start (a stream computes :meth:`stream_margin` frames
        more, before the ones it uses)."""
        segment = audio[max(0, round(first / fps * self.spec.rate) - audio_start) :]
        return self.windows(self.finish(self.frames(segment, warp), stats), count, fps)


def with_deltas(frames: np.ndarray) -> np.ndarray:
    """(M, 2C) float32: (M, C) ``frames`` with their first time derivative appended (librosa's 5-frame
    regression; zeros for fewer than 5 frames)."""
    import librosa

    if len(frames) < 5:
        return np.concatenate([frames, np.zeros_like(frames)], 1)
    return np.concatenate([frames, librosa.feature.delta(frames, width=5, axis=0)], 1).astype(np.float32)


def frame_windows(frames: np.ndarray, rate_hz: float, n_video: int, fps: float, window: int) -> np.ndarray:
    """(n_video, window, C): for video frame k, the ``window`` feature frames (M, C) centred on time
    k / fps, feature frame m being centred at m / rate_hz. Windows running past either end repeat the edge
    frame."""
    centres = np.round(np.arange(n_video) / fps * rate_hz).astype(int)
    offsets = np.arange(window) - window // 2
    idx = np.clip(centres[:, None] + offsets[None, :], 0, len(frames) - 1)
    return frames[idx]


def window_frames(window_ms: float, rate_hz: float) -> int:
    """Feature frames in a window of ``window_ms`` milliseconds at ``rate_hz`` (at least 2)."""
    return max(2, round(window_ms / 1000 * rate_hz))
