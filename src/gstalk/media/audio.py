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

from collections.abc import Iterator
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


def _open_audio(path: Path):
    """The container of an audio (or video) file; GstalkErrors for a missing path, a folder, unreadable
    data, or no audio track."""
    if path.is_dir():
        raise GstalkError(f"{path} is a folder, not an audio file",
                          "pass an audio file (wav, mp3, flac, m4a) or a video with sound")  # fmt: skip
    if not path.is_file():
        raise GstalkError(f"no such audio file: {path}", "check the path")
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as err:
        raise GstalkError(
            f"{path} is not readable audio ({err})",
            "pass a wav, mp3, flac or m4a file (or a video with sound)",
        ) from err
    if not container.streams.audio:
        container.close()
        raise GstalkError(
            f"{path} has no audio track",
            "gstalk needs the speech: use a clip with its sound, or add it with ffmpeg -i video -i audio",
        )
    return container


@dataclass(frozen=True)
class AudioHeader:
    """What an audio file's container says about its first audio stream, before any decoding."""

    seconds: float | None
    """Its duration as the header gives it (None when it gives none)."""
    rate: int
    """The file's own sample rate, Hz."""
    channels: int


def probe_audio(path: str | Path) -> AudioHeader:
    """The header of ``path``'s first audio stream (nothing is decoded). For a WAV file the duration is
    the one its ``data`` chunk declares (FFmpeg reports what the file holds, so a truncated WAV would go
    unnoticed). Errors as :func:`decode_audio`."""
    path = Path(path)
    with _open_audio(path) as container:
        stream = container.streams.audio[0]
        seconds = None
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        declared = _wav_declared_seconds(path)
        return AudioHeader(declared if declared is not None else seconds, int(stream.rate or 0),
                           int(stream.channels or 0))  # fmt: skip


def _wav_declared_seconds(path: Path) -> float | None:
    """Seconds of sound a RIFF WAV file's ``data`` chunk declares; None for other files, or a size left
    open (0 or 0xFFFFFFFF: written while streaming)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        kind, size = head[pos : pos + 4], int.from_bytes(head[pos + 4 : pos + 8], "little")
        if kind == b"fmt " and pos + 20 <= len(head):
            byte_rate = int.from_bytes(head[pos + 16 : pos + 20], "little")
        if kind == b"data":
            if not byte_rate or size in (0, 0xFFFFFFFF):
                return None
            return size / byte_rate
        pos += 8 + size + (size & 1)
    return None


class _Decoded:
    """What decoding an audio stream found besides its samples (filled in as it goes)."""

    def __init__(self) -> None:
        self.start: float | None = None  # time of the first sample on the container's clock
        self.own = 0  # the file's own samples decoded (per channel), at ``rate``
        self.rate = 0  # the file's own sample rate
        self.bad = 0  # of its own sample values (all channels), those that are NaN or infinite
        self.damaged_at: float | None = None  # decoding failed after this many seconds (tolerant mode)

    def count(self, frame: av.AudioFrame) -> None:
        self.own += frame.samples
        self.rate = frame.sample_rate
        if frame.format.name.startswith(("flt", "dbl")):  # only floating-point samples can be NaN
            self.bad += int(np.count_nonzero(~np.isfinite(frame.to_ndarray())))


def _decoded(
    container, path: Path, rate: int, max_seconds: float | None, found: _Decoded, tolerant: bool = False
) -> Iterator[np.ndarray]:
    """Mono float32 chunks at ``rate`` of the first audio stream, each decoded frame at its timestamp
    (gaps filled with silence); ``found`` gets the first sample's time and the rest. A decoding error
    raises GstalkError, or with ``tolerant`` (once some audio decoded) ends the chunks and is recorded
    in ``found.damaged_at``."""
    out = _Samples(rate)
    placed = 0.0  # input seconds placed since the first frame
    try:
        for frame in container.decode(container.streams.audio[0]):
            if found.start is None:
                found.start = float(frame.time) if frame.time is not None else 0.0
            elif frame.time is not None and frame.time - (found.start + placed) > GAP_SECONDS:
                gap = frame.time - (found.start + placed)
                out.silence(gap)
                placed += gap
            placed += frame.samples / frame.sample_rate
            found.count(frame)
            out.add(frame)
            if max_seconds is not None and out.size > max_seconds * rate:
                raise GstalkError(
                    f"{path} is longer than the limit of {max_seconds:g} s",
                    "cut the audio, or raise the limit (--max-audio-seconds)",
                )
            yield from out.drain()
        out.add(None)
        yield from out.drain()
    except (av.error.InvalidDataError, av.error.FFmpegError) as err:
        if not out.size:
            raise GstalkError(
                f"{path}: its audio could not be decoded ({err})", "re-export the file"
            ) from err
        if tolerant:
            found.damaged_at = out.size / rate
            yield from out.drain()
            return
        raise GstalkError(
            f"{path}: its audio is corrupt or truncated after {out.size / rate:.2f} s ({err})",
            "re-export the file",
        ) from err


def _check_finite(path: Path, found: _Decoded) -> None:
    if found.bad:
        raise GstalkError(
            f"{path} has {found.bad} samples that are not numbers (NaN or infinite), of its {found.own} "
            f"at {found.rate} Hz",
            "repair or re-export the audio from its source; no player can play those samples either",
        )


def decode_audio(
    path: str | Path, rate: int = AUDIO_RATE, max_seconds: float | None = None, origin: float | None = None
) -> TimedAudio:
    """The first audio stream of ``path`` (a video or an audio file) as mono float32 at ``rate``, with the
    time of its first sample after the video's first shown frame (see the module docstring).
    ``origin``: that frame's time on the container's clock (``VideoInfo.start``), when the caller knows it.

    Errors name the problem: a missing file or a folder, an unreadable file, no audio stream, audio that
    does not decode, NaN or infinite samples (a float file; counted among the file's own samples), or
    (with ``max_seconds``) more than ``max_seconds`` of it.
    """
    path = Path(path)
    found = _Decoded()
    with _open_audio(path) as container:
        chunks = list(_decoded(container, path, rate, max_seconds, found))
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    origin = _video_origin(path) if origin is None else origin
    if samples.size == 0:
        raise GstalkError(f"{path}: its audio track is empty", "use a file with speech in it")
    _check_finite(path, found)
    start = found.start or 0.0
    return TimedAudio(samples, start - origin if origin is not None else 0.0, rate)


def read_audio(path: str | Path, rate: int = AUDIO_RATE, max_seconds: float | None = None) -> np.ndarray:
    """(N,) float32 mono at ``rate``: the sound of ``path`` as a player plays it. For a video, sample 0 is
    at its first shown frame (silence first if the audio starts later; audio before that frame left
    out); for an audio file, its first sample. Errors as :func:`decode_audio`."""
    audio = decode_audio(path, rate, max_seconds)
    return audio.samples if audio.start == 0 else audio.from_zero()


class AudioReader:
    """The sound of ``path`` as :func:`read_audio` returns it, decoded as it is read, in chunks of about
    ``chunk_seconds``: memory stays bounded however long the file. Iterate once.

    Damage does not stop it: decoding ends where the file stops decoding, and ``damaged_at`` then says
    after how many seconds (of the file's audio). After iterating, ``bad`` and ``own`` count the file's
    own non-finite sample values and samples (see :func:`check_finite`). Errors as :func:`decode_audio`
    (raised when iteration starts)."""

    def __init__(self, path: str | Path, rate: int = AUDIO_RATE, chunk_seconds: float = 2.0,
                 max_seconds: float | None = None) -> None:  # fmt: skip
        self.path, self.rate, self.max_seconds = Path(path), rate, max_seconds
        self.chunk = max(1, round(chunk_seconds * rate))
        self.found = _Decoded()

    @property
    def damaged_at(self) -> float | None:
        return self.found.damaged_at

    def __iter__(self) -> Iterator[np.ndarray]:
        origin = _video_origin(self.path)
        pending: list[np.ndarray] = []
        size = 0
        with _open_audio(self.path) as container:
            skip = None  # samples before time 0 still to leave out (negative: silence to put first)
            for chunk in _decoded(container, self.path, self.rate, self.max_seconds, self.found, True):
                if skip is None:
                    start = (self.found.start or 0.0) - (origin or 0.0) if origin is not None else 0.0
                    skip = round(-start * self.rate)
                    if skip < 0:
                        pending.append(np.zeros(-skip, np.float32))
                        size, skip = -skip, 0
                if skip:
                    cut = min(skip, chunk.size)
                    chunk, skip = chunk[cut:], skip - cut
                pending.append(chunk)
                size += chunk.size
                while size >= self.chunk:
                    joined = np.concatenate(pending)
                    yield joined[: self.chunk]
                    rest = joined[self.chunk :]
                    pending, size = [rest], rest.size
        if size:
            yield np.concatenate(pending)

    def check_finite(self) -> None:
        """Raise GstalkError when the file held NaN or infinite samples (after iterating)."""
        _check_finite(self.path, self.found)


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

    def drain(self) -> list[np.ndarray]:
        """The chunks gathered since the last drain (float32), handed over."""
        chunks, self.chunks = self.chunks, []
        return [c.astype(np.float32, copy=False) for c in chunks]


def silent_frames(audio: np.ndarray, n: int, fps: float, rate: int = AUDIO_RATE) -> np.ndarray:
    """(n,) bool: the video frames (frame k spans [k, k + 1) / ``fps`` s) whose samples of ``audio``
    (mono, ``rate`` Hz) are all digital silence, |x| < 1e-4; a frame past the end counts as silent."""
    hop = rate / fps
    peaks = [np.abs(audio[int(k * hop) : int((k + 1) * hop)]).max(initial=0.0) for k in range(n)]
    return np.asarray(peaks) < 1e-4


#: below this level (dBFS) of the loudest 100 ms, audio is silent (:func:`is_silent`)
SILENT_DB = -50.0


class Loudest:
    """The loudest 100 ms of a stream fed in chunks (:meth:`add`), in dBFS: windows of 1600 samples at
    16 kHz from its start, as :func:`is_silent` cuts them."""

    WINDOW = AUDIO_RATE // 10

    def __init__(self) -> None:
        self.rest = np.zeros(0, np.float32)
        self.peak = 0.0  # largest mean square of a whole window
        self.windows = 0

    def add(self, chunk: np.ndarray) -> None:
        joined = np.concatenate([self.rest, np.asarray(chunk, np.float32).reshape(-1)])
        n = joined.size // self.WINDOW
        if n:
            squares = joined[: n * self.WINDOW].reshape(n, self.WINDOW).astype(np.float64) ** 2
            self.peak = max(self.peak, float(squares.mean(axis=1).max()))
            self.windows += n
        self.rest = joined[n * self.WINDOW :]

    @property
    def db(self) -> float:
        """The loudest window's RMS in dBFS (a stream shorter than a window: all of it)."""
        peak = self.peak
        if not self.windows and self.rest.size:
            peak = float(np.mean(self.rest.astype(np.float64) ** 2))
        return float(20 * np.log10(np.sqrt(peak) + 1e-12))


@dataclass(frozen=True)
class AudioScan:
    """What one pass over an audio file found, holding none of it (:func:`scan_audio`)."""

    seconds: float
    """Seconds of sound from time 0, as :func:`read_audio` would return them (up to any damage)."""
    samples: int
    """Samples of it at 16 kHz."""
    loudest_db: float
    """The loudest 100 ms, dBFS (:class:`Loudest`)."""
    damaged_at: float | None
    """Decoding failed after this many seconds of the file's audio (None: it decoded to its end)."""
    decoded_seconds: float = 0.0
    """Seconds of the file's own audio that decoded (before it is placed on the video's timeline), to
    hold against its header's duration."""


def scan_audio(path: str | Path, max_seconds: float | None = None) -> AudioScan:
    """Decode ``path`` once at 16 kHz, in chunks, keeping none of it: its length, its loudest 100 ms and
    where it stops decoding. Memory stays bounded however long the file. Raises as :func:`decode_audio`
    (NaN or infinite samples, counted among the file's own, after the pass)."""
    reader = AudioReader(path, AUDIO_RATE, max_seconds=max_seconds)
    loudest, samples = Loudest(), 0
    for chunk in reader:
        samples += chunk.size
        loudest.add(chunk)
    reader.check_finite()
    if samples == 0:
        raise GstalkError(f"{path}: its audio track is empty", "use a file with speech in it")
    own = reader.found.own / reader.found.rate if reader.found.rate else 0.0
    return AudioScan(samples / AUDIO_RATE, samples, loudest.db, reader.damaged_at, own)


def is_silent(audio: np.ndarray, threshold_db: float = SILENT_DB) -> bool:
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
