"""Encoding video with its audio muxed in (PyAV): the research tools write silent mp4s, we do not."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

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
    count = 0
    with av.open(str(path), mode="w", format=container_format) as out:
        vstream = None
        astream = out.add_stream("aac", rate=rate, layout="mono") if audio is not None else None
        for frame in frames:
            if vstream is None:
                vstream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                vstream.width, vstream.height = frame.shape[1], frame.shape[0]
                vstream.pix_fmt = "yuv420p"
                vstream.options = {"crf": str(crf), "preset": "veryfast"}
            for packet in vstream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
            count += 1
        if vstream is not None:
            for packet in vstream.encode():
                out.mux(packet)
        if astream is not None:
            _encode_audio(out, astream, audio, rate)
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
