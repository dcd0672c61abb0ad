"""Encoding video with its audio muxed in (PyAV): the research tools write silent mp4s, we do not."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from queue import Queue

import av
import numpy as np

from .audio import AUDIO_RATE


def write_video(
    path: str | Path,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | Iterable[np.ndarray] | None = None,
    rate: int = AUDIO_RATE,
    crf: int = 18,
    container_format: str = "mp4",
    comment: str | None = None,
) -> int:
    """Encode RGB uint8 frames as H.264 (yuv420p) with mono float ``audio`` muxed in as AAC.

    ``audio``: one array, or chunks of it as they are decoded (never held whole). Frames are encoded as
    they arrive (nothing is held), the audio alongside them up to each frame's time, so the file is
    interleaved and memory stays bounded however long it is. ``comment``: the container's comment tag
    (read back by :func:`container_comment`). Writes ``path`` directly: callers wanting an atomic write
    pass a temporary path (see ``fileio.atomic_path``). Returns the number of frames written.
    """
    with av.open(str(path), mode="w", format=container_format) as out:
        if comment is not None:
            out.metadata["comment"] = comment
        sound = None
        if audio is not None:
            chunks = [audio] if isinstance(audio, np.ndarray) else audio
            sound = _Sound(out, out.add_stream("aac", rate=rate, layout="mono"), chunks, rate)
        count = _encode_frames(out, frames, fps, crf, sound)
        if sound is not None:
            sound.until(None)
    return count


def container_comment(path: str | Path) -> str | None:
    """The comment tag of a media file's container (as :func:`write_video` writes it); None when it has
    none or is not a media file FFmpeg reads."""
    try:
        with av.open(str(path)) as f:
            tags = {k.lower(): v for k, v in f.metadata.items()}
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError):
        return None
    return tags.get("comment")


def _encode_frames(out, frames: Iterable[np.ndarray], fps: float, crf: int, sound: _Sound | None) -> int:
    """Encode on a second thread (PyAV releases the GIL while x264 works), so rendering the next frame and
    encoding this one overlap; a queue of two frames bounds the memory. The audio up to each frame's end
    is encoded after it, on the same thread."""
    queue: Queue = Queue(maxsize=2)
    state: dict = {"stream": None, "error": None}

    def encoder() -> None:
        try:
            k = 0
            while (frame := queue.get()) is not None:
                stream = state["stream"]
                if stream is None:
                    stream = state["stream"] = out.add_stream(
                        "libx264", rate=Fraction(fps).limit_denominator(1001)
                    )
                    stream.width, stream.height = frame.shape[1], frame.shape[0]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
                k += 1
                if sound is not None:
                    sound.until(k / fps)
            if state["stream"] is not None:
                for packet in state["stream"].encode():
                    out.mux(packet)
        except BaseException as err:  # handed to the producer, which raises it
            state["error"] = err
            while queue.get() is not None:  # drain, so the producer never blocks
                pass

    thread = threading.Thread(target=encoder, name="gstalk-encode", daemon=True)
    thread.start()
    count = 0
    try:
        for frame in frames:
            if state["error"] is not None:
                break
            queue.put(frame)
            count += 1
    finally:
        queue.put(None)
        thread.join()
    if state["error"] is not None:
        raise state["error"]
    return count


class _Sound:
    """The audio track, encoded from its chunks as far as it is asked (:meth:`until`), in codec-sized
    frames with explicit timestamps: the muxer then records the AAC encoder's priming delay (an edit
    list), so the sound starts exactly with the first video frame on playback."""

    FRAME = 1024

    def __init__(self, out, stream, chunks: Iterable[np.ndarray], rate: int) -> None:
        self.out, self.stream, self.rate = out, stream, rate
        self.chunks = iter(chunks)
        self.pending = np.zeros(0, np.float32)
        self.pts = 0
        self.ended = False

    def until(self, seconds: float | None) -> None:
        """Encode the audio up to ``seconds`` (None: all of it, then flush the encoder)."""
        target = None if seconds is None else round(seconds * self.rate)
        while target is None or self.pts + self.FRAME <= target:
            while self.pending.size < self.FRAME and not self.ended:
                chunk = next(self.chunks, None)
                if chunk is None:
                    self.ended = True
                else:
                    chunk = np.ascontiguousarray(chunk, dtype=np.float32).reshape(-1)
                    self.pending = np.concatenate([self.pending, chunk])
            if not self.pending.size:
                break
            self._encode(self.pending[: self.FRAME])
            self.pending = self.pending[self.FRAME :]
        if target is None:
            for packet in self.stream.encode():
                self.out.mux(packet)

    def _encode(self, samples: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(samples[None].copy(), format="fltp", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.pts
        frame.time_base = Fraction(1, self.rate)
        self.pts += samples.size
        for packet in self.stream.encode(frame):
            self.out.mux(packet)
