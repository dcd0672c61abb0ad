"""Audio decoding to 16 kHz mono float32 with PyAV (any container or codec FFmpeg reads), placed on the
video's clock.

:func:`decode_audio` returns the samples with the time of the first one, measured from the first shown
frame of the file's video (``media.video``): an audio stream that starts 0.48 s after the video has
``start == 0.48``. Each decoded audio frame is placed at its own presentation time (which already
reflects the container's edit list and the codec's priming samples), so a gap in the stream becomes
silence rather than pulling the rest of the sound early.

:func:`read_audio` is what a user means by "the sound of this file": for a video, the audio a player
plays with it, from its first shown frame on. Sample 0 is that frame's instant; where the audio starts
later there is silence, audio before the first frame is left out, and audio after the last frame is kept
(the whole speech). So ``render --audio clip.mp4`` gives a video whose frame k goes with clip.mp4's frame
k. For an audio file, sample 0 is its first sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from ..errors import GstalkError
from .video import first_frame, open_media, video_stream

AUDIO_RATE = 16_000

#: a jump in audio timestamps longer than this becomes silence (shorter ones are codec rounding)
GAP_SECONDS = 0.02


@dataclass(frozen=True)
class TimedAudio:
    """Mono samples and where they sit in time."""

    samples: np.ndarray
    """(N,) float32 mono."""
    start: float
    """Time of ``samples[0]`` in seconds after the first shown video frame (0 for an audio-only file)."""
    rate: int = AUDIO_RATE
    """Samples per second."""

    @property
    def end(self) -> float:
        """Time just after the last sample, seconds."""
        return self.start + self.samples.size / self.rate

    def shifted(self, seconds: float) -> TimedAudio:
        """The same sound played ``seconds`` later (earlier if negative)."""
        return TimedAudio(self.samples, self.start + seconds, self.rate)

    def between(self, t0: float, t1: float) -> np.ndarray:
        """(round((t1 - t0) · rate),) float32: the sound from ``t0`` to ``t1`` seconds, silence where there
        is none."""
        n = max(0, round((t1 - t0) * self.rate))
        first = round((t0 - self.start) * self.rate)
        out = np.zeros(n, np.float32)
        lo, hi = max(first, 0), min(first + n, self.samples.size)
        if hi > lo:
            out[lo - first : hi - first] = self.samples[lo:hi]
        return out

    def from_zero(self) -> np.ndarray:
        """The samples from time 0 (the first shown frame) to the end of the sound."""
        return self.between(0.0, max(self.end, 0.0))


def decode_audio(
    path: str | Path, rate: int = AUDIO_RATE, max_seconds: float | None = None, origin: float | None = None
) -> TimedAudio:
    """The first audio stream of ``path`` (a video or an audio file) as mono float32 at ``rate``, with the
    time of its first sample after the video's first shown frame (see the module docstring).
    ``origin``: that frame's time on the container's clock (``VideoInfo.start``), when the caller knows it.

    Errors name the problem: a missing or unreadable file, no audio stream, audio that does not decode,
    NaN or infinite samples (a float file), or (with ``max_seconds``) more than ``max_seconds`` of it.
    """
    path = Path(path)
    if not path.is_file():
        raise GstalkError(f"no such audio file: {path}", "check the path")
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as err:
        raise GstalkError(
            f"{path} is not readable audio ({err})",
            "pass a wav, mp3, flac or m4a file (or a video with sound)",
        ) from err
    with container:
        if not container.streams.audio:
            raise GstalkError(
                f"{path} has no audio track",
                "gstalk needs the speech: use a clip with its sound, or add it with ffmpeg -i video -i audio",
            )
        start, samples = _decode(container, path, rate, max_seconds)
    origin = _video_origin(path) if origin is None else origin
    if samples.size == 0:
        raise GstalkError(f"{path}: its audio track is empty", "use a file with speech in it")
    bad = int(np.count_nonzero(~np.isfinite(samples)))
    if bad:
        raise GstalkError(
            f"{path} has {bad} samples that are not numbers (NaN or infinite)",
            "repair or re-export the audio from its source; no player can play those samples either",
        )
    return TimedAudio(samples, start - origin if origin is not None else 0.0, rate)


def read_audio(path: str | Path, rate: int = AUDIO_RATE, max_seconds: float | None = None) -> np.ndarray:
    """(N,) float32 mono at ``rate``: the sound of ``path`` as a player plays it. For a video, sample 0 is
    at its first shown frame (silence first if the audio starts later; audio before that frame left
    out); for an audio file, its first sample. Errors as :func:`decode_audio`."""
    audio = decode_audio(path, rate, max_seconds)
    return audio.samples if audio.start == 0 else audio.from_zero()


def _video_origin(path: Path) -> float | None:
    """Time of the first shown video frame on the container's clock; None for an audio-only file."""
    with open_media(path) as container:
        if video_stream(container) is None:
            return None
        frame = first_frame(container, path)
        return float(frame.time) if frame.time is not None else 0.0


class _Samples:
    """Resampled output, gathered chunk by chunk, with its length."""

    def __init__(self, rate: int) -> None:
        self.rate, self.chunks, self.size = rate, [], 0
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)

    def add(self, frame: av.AudioFrame | None) -> None:
        for out in self.resampler.resample(frame):
            chunk = out.to_ndarray().reshape(-1)
            self.chunks.append(chunk)
            self.size += chunk.size

    def silence(self, seconds: float) -> None:
        """End the resampler's stream (its tail comes out first), then ``seconds`` of zeros."""
        self.add(None)
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        self.chunks.append(np.zeros(round(seconds * self.rate), np.float32))
        self.size += self.chunks[-1].size

    def array(self) -> np.ndarray:
        return np.concatenate(self.chunks).astype(np.float32) if self.chunks else np.zeros(0, np.float32)


def _decode(container, path: Path, rate: int, max_seconds: float | None) -> tuple[float, np.ndarray]:
    """(time of the first sample on the container's clock, samples) of the first audio stream; each
    decoded frame at its timestamp, gaps filled with silence."""
    out = _Samples(rate)
    start, placed = None, 0.0  # time of the first frame, input seconds placed since
    try:
        for frame in container.decode(container.streams.audio[0]):
            if start is None:
                start = float(frame.time) if frame.time is not None else 0.0
            elif frame.time is not None and frame.time - (start + placed) > GAP_SECONDS:
                gap = frame.time - (start + placed)
                out.silence(gap)
                placed += gap
            placed += frame.samples / frame.sample_rate
            out.add(frame)
            if max_seconds is not None and out.size > max_seconds * rate:
                raise GstalkError(
                    f"{path} is longer than the limit of {max_seconds:g} s",
                    "cut the audio, or raise the limit (--max-audio-seconds)",
                )
        out.add(None)
    except (av.error.InvalidDataError, av.error.FFmpegError) as err:
        if not out.size:
            raise GstalkError(
                f"{path}: its audio could not be decoded ({err})", "re-export the file"
            ) from err
        raise GstalkError(
            f"{path}: its audio is corrupt or truncated after {out.size / rate:.2f} s ({err})",
            "re-export the file",
        ) from err
    return (start or 0.0), out.array()


def silent_frames(audio: np.ndarray, n: int, fps: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """(n,) bool: the video frames (frame k spans [k, k + 1) / ``fps`` s) whose samples of ``audio``
    (mono, ``rate`` Hz) are all digital silence, |x| < 1e-4; a frame past the end counts as silent."""
    hop = rate / fps
    peaks = [np.abs(audio[int(k * hop) : int((k + 1) * hop)]).max(initial=0.0) for k in range(n)]
    return np.asarray(peaks) < 1e-4


def is_silent(audio: np.ndarray, threshold_db: float = -50.0) -> bool:
    """True when the loudest 100 ms of ``audio`` stays below ``threshold_db`` dBFS."""
    if audio.size == 0:
        return True
    win = max(1, AUDIO_RATE // 10)
    n = audio.size // win
    frames = audio[: n * win].reshape(n, win) if n else audio[None]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)).max()
    return 20 * np.log10(rms + 1e-12) < threshold_db


def audio_energy(audio: np.ndarray, n_frames: int, fps: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """(n_frames,) float64: per video frame k, the log RMS energy (dB) of the audio from ``k / fps`` to
    ``(k + 1) / fps`` (sample 0 at frame 0's time); -100 where there is no audio."""
    hop = rate / fps
    out = np.empty(n_frames)
    for k in range(n_frames):
        seg = audio[int(k * hop) : int((k + 1) * hop)]
        out[k] = 10 * np.log10(np.mean(seg.astype(np.float64) ** 2) + 1e-10) if seg.size else -100.0
    return out


#: the band of speech energy that follows the mouth (formants of open vowels; above the voice's pitch and
#: hum, below fricative hiss)
SPEECH_BAND_HZ = (300.0, 3000.0)


def speech_energy(
    audio: np.ndarray, n_frames: int, fps: float, rate: int = AUDIO_RATE, floor_db: float = 50.0
) -> np.ndarray:
    """(n_frames,) float64: per video frame k, the log energy (dB) of ``audio`` (sample 0 at frame 0's
    time) between 300 and 3000 Hz, in a Hann window two frames long centred on the middle of the frame
    (``(k + 0.5) / fps``); floored ``floor_db`` below the loudest frame, so digital silence does not
    dominate a correlation. NaN for frames whose window has no audio at all."""
    hop = rate / fps
    win = max(2, round(2 * hop))
    centres = np.round((np.arange(n_frames) + 0.5) * hop).astype(np.int64)
    starts = centres - win // 2
    padded = np.concatenate([np.zeros(win, np.float32), audio.astype(np.float32), np.zeros(win, np.float32)])
    freqs = np.fft.rfftfreq(win, 1 / rate)
    band = (freqs >= SPEECH_BAND_HZ[0]) & (freqs <= SPEECH_BAND_HZ[1])
    window = np.hanning(win).astype(np.float32)
    out = np.full(n_frames, np.nan)
    for lo in range(0, n_frames, 1024):  # blocks bound the memory of the (frames, window) matrix
        idx = starts[lo : lo + 1024, None] + win + np.arange(win)
        power = np.abs(np.fft.rfft(padded[np.clip(idx, 0, padded.size - 1)] * window, axis=1)) ** 2
        out[lo : lo + 1024] = 10 * np.log10(power[:, band].sum(1) + 1e-10)
    has_audio = (starts + win > 0) & (starts < audio.size)
    out[~has_audio] = np.nan
    if np.isfinite(out).any():
        out = np.maximum(out, np.nanmax(out) - floor_db)
    return out


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 ``audio`` at ``rate`` Hz resampled to ``target`` Hz (soxr, high quality, as librosa's
    default)."""
    if rate == target:
        return np.asarray(audio, np.float32)
    import librosa

    return librosa.resample(np.asarray(audio, np.float32), orig_sr=rate, target_sr=target).astype(np.float32)
