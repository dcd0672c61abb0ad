"""Writing the kinds of input players handle and prepare must too, with PyAV alone: display matrices
(every turn and mirror), non-square pixels, streams that start late, either stream first, sound shorter or
longer than the picture, and gaps in the sound."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_av(
    path: Path,
    frames: Sequence[np.ndarray],
    fps: float,
    audio: np.ndarray | None,
    rate: int = 16_000,
    audio_start: float = 0.0,
    video_start: float = 0.0,
    audio_first: bool = False,
    turn: tuple[int, bool, bool] | None = None,
    sar: Fraction | None = None,
    audio_gap: tuple[float, float] | None = None,
    crf: int = 12,
) -> Path:
    """An mp4 of RGB ``frames`` (H.264) and mono ``audio`` (AAC) whose first frame is presented at
    ``video_start`` and first sample at ``audio_start`` seconds (the muxer writes edit lists for them).

    ``turn`` = (degrees anticlockwise, hflip, vflip) is stored as the display matrix (PyAV's
    ``set_display_rotation``), ``sar`` as the sample aspect ratio; the frames are written as given (the
    caller stores them the way the matrix undoes). ``audio_gap`` = (at, seconds): the sound stops at
    ``at`` seconds of its own and resumes ``seconds`` later, with the timestamps saying so.
    """
    with av.open(str(path), "w", format="mp4") as out:
        astream = (
            out.add_stream("aac", rate=rate, layout="mono") if audio_first and audio is not None else None
        )
        vstream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vstream.height, vstream.width = frames[0].shape[:2]
        vstream.pix_fmt = "yuv444p"
        vstream.options = {"crf": str(crf)}
        tick = Fraction(1, round(fps * 100))
        vstream.codec_context.time_base = tick
        if sar is not None:
            vstream.codec_context.sample_aspect_ratio = sar
        if turn is not None:
            vstream.set_display_rotation(turn[0], hflip=turn[1], vflip=turn[2])
        if astream is None and audio is not None:
            astream = out.add_stream("aac", rate=rate, layout="mono")
        start = round(video_start / tick)
        for k, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts, frame.time_base = start + 100 * k, tick
            for packet in vstream.encode(frame):
                out.mux(packet)
        for packet in vstream.encode():
            out.mux(packet)
        if audio is not None:
            _write_audio(out, astream, audio, rate, audio_start, audio_gap)
    return path


def _write_audio(out, stream, audio, rate, start, gap) -> None:
    first, skip_at, skip = round(start * rate), None, 0
    if gap is not None:
        skip_at, skip = round(gap[0] * rate), round(gap[1] * rate)
    for i in range(0, audio.size, 1024):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio[None, i : i + 1024], np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = rate
        frame.pts = first + i + (skip if skip_at is not None and i >= skip_at else 0)
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def stored_for(upright: np.ndarray, degrees: int, hflip: bool, vflip: bool) -> np.ndarray:
    """The frame to store so that a player applying ``set_display_rotation(degrees, hflip, vflip)`` (turn
    ``degrees`` anticlockwise, then mirror) shows ``upright``: the same steps undone in reverse order."""
    img = upright
    if vflip:
        img = img[::-1]
    if hflip:
        img = img[:, ::-1]
    return np.ascontiguousarray(np.rot90(img, k=-(degrees // 90)))


def pattern(height: int = 48, width: int = 64) -> np.ndarray:
    """An image no turn or mirror maps onto itself: four quadrant colours and a white block near the
    top-left corner."""
    img = np.zeros((height, width, 3), np.uint8)
    h, w = height // 2, width // 2
    img[:h, :w], img[:h, w:] = (200, 30, 30), (30, 200, 30)
    img[h:, :w], img[h:, w:] = (30, 30, 200), (200, 200, 30)
    img[2:10, 2:10] = 255
    return img
