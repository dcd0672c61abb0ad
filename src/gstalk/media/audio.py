"""Audio decoding to 16 kHz mono float32 with PyAV: any container or codec ffmpeg reads."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from ..errors import GstalkError

AUDIO_RATE = 16_000


def read_audio(path: str | Path, rate: int = AUDIO_RATE, max_seconds: float | None = None) -> np.ndarray:
    """Decode the first audio stream of ``path`` (a video or an audio file) to mono float32 at ``rate``.

    Errors name the problem: a missing or unreadable file, no audio stream, or (with ``max_seconds``)
    audio longer than allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise GstalkError(f"no such audio file: {path}", "check the path")
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError) as err:
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
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)
                    chunks.append(chunk)
                    total += chunk.size
                if max_seconds is not None and total > max_seconds * rate:
                    raise GstalkError(
                        f"{path} is longer than the limit of {max_seconds:g} s",
                        "cut the audio, or raise the limit (--max-audio-seconds)",
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except (av.error.InvalidDataError, av.error.FFmpegError) as err:
            if not chunks:
                raise GstalkError(
                    f"{path}: its audio could not be decoded ({err})", "re-export the file"
                ) from err
            raise GstalkError(
                f"{path}: its audio is corrupt or truncated after {total / rate:.2f} s ({err})",
                "re-export the file",
            ) from err
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        raise GstalkError(f"{path}: its audio track is empty", "use a file with speech in it")
    return audio


def is_silent(audio: np.ndarray, threshold_db: float = -50.0) -> bool:
    """True when the loudest 100 ms of ``audio`` stays below ``threshold_db`` dBFS."""
    if audio.size == 0:
        return True
    win = max(1, AUDIO_RATE // 10)
    n = audio.size // win
    frames = audio[: n * win].reshape(n, win) if n else audio[None]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)).max()
    return 20 * np.log10(rms + 1e-12) < threshold_db


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono float32 ``audio`` at ``rate`` Hz resampled to ``target`` Hz (soxr, high quality, as librosa's
    default)."""
    if rate == target:
        return np.asarray(audio, np.float32)
    import librosa

    return librosa.resample(np.asarray(audio, np.float32), orig_sr=rate, target_sr=target).astype(np.float32)
