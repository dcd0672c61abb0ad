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
    audio: np.ndarray | None = None,
    rate: int = AUDIO_RATE,
    crf: int = 18,
    container_format: str = "mp4",
) -> int:
    """Encode RGB uint8 frames as H.264 (yuv420p) with mono float ``audio`` muxed in as AAC.

    Frames are encoded as they arrive (nothing is held). Writes ``path`` directly: callers wanting an atomic
    write pass a temporary path (see ``fileio.atomic_path``). Returns the number of frames written.
    """
    with av.open(str(path), mode="w", format=container_format) as out:
        astream = out.add_stream("aac", rate=rate, layout="mono") if audio is not None else None
        count = _encode_frames(out, frames, fps, crf)
        if astream is not None:
            _encode_audio(out, astream, audio, rate)
    return count


def _encode_frames(out, frames: Iterable[np.ndarray], fps: float, crf: int) -> int:
    """Encode on a second thread (PyAV releases the GIL while x264 works), so rendering the next frame and
    encoding this one overlap; a queue of two frames bounds the memory."""
    queue: Queue = Queue(maxsize=2)
    state: dict = {"stream": None, "error": None}

    def encoder() -> None:
        try:
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


def _encode_audio(out, stream, audio: np.ndarray, rate: int, chunk: int = 1024) -> None:
    """Encode in codec-sized frames with explicit timestamps: the muxer then records the AAC encoder's
    priming delay (an edit list), so the sound starts exactly with the first video frame on playback."""
    samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    for start in range(0, samples.size, chunk):
        frame = av.AudioFrame.from_ndarray(
            samples[None, start : start + chunk].copy(), format="fltp", layout="mono"
        )
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
