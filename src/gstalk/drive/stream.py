"""Streaming: audio chunks in, frames out, with bounded latency.

Frame k needs the audio up to the end of the feature windows of itself and of the frames after it that
the model's temporal context reaches (``future`` frames, 3 by default: the audio → motion model and the
residual networks see the same context). The lookahead is therefore fixed: ``future / fps + window / 2``
seconds of audio (0.2 s at 25 fps with 160 ms windows), plus the time to compute one frame. Features are
computed on a short sliding segment of recent audio, so memory and
work per frame stay bounded however long the stream runs.

Loudness is normalised from the first second of the stream (offline rendering uses the whole file), so
streamed frames can differ slightly from offline ones at the very start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np

from ..data.frames import to_uint8
from ..media.audio import AUDIO_RATE as RATE
from ..media.features import loudness_gain, loudness_level
from .driver import Driver, PoseSource


def lookahead_seconds(driver: Driver) -> float:
    """Audio that must have arrived beyond a frame's own time before it can be rendered."""
    return driver.future / driver.fps + driver.ds.audio_spec.window_seconds / 2


def stream_frames(
    driver: Driver, chunks: Iterable[np.ndarray], pose: PoseSource | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame index, RGB uint8 frame)`` as soon as the audio each frame needs has arrived.

    ``chunks``: 16 kHz mono float32 arrays of any length (e.g. 20 ms from a microphone). When the iterable
    ends, the remaining frames are flushed with their lookahead padded with silence.
    """
    pose = pose or PoseSource()
    fps = driver.fps
    spec = driver.ds.audio_spec
    spec.check_computable()
    past, future = driver.past, driver.future
    window = spec.window_seconds
    ahead = lookahead_seconds(driver)
    margin = math.ceil(window * fps) + 1  # frames of audio before the first one used, against edge effects
    buffer, offset = np.zeros(0, np.float32), 0  # offset: samples already dropped from the front
    gain: float | None = None
    stats: tuple[np.ndarray, np.ndarray] | None = None
    next_frame, ended = 0, False
    source = iter(chunks)
    while not ended:
        try:
            buffer = np.concatenate([buffer, np.asarray(next(source), dtype=np.float32).reshape(-1)])
        except StopIteration:
            ended = True
        arrived = (offset + buffer.size) / RATE
        if gain is None:
            if arrived < 1.0 and not ended:
                continue
            gain = loudness_gain(loudness_level(buffer))
            if spec.normalisation == "utterance":  # the utterance so far: its first second
                first = spec.frames(buffer * gain, normalise_loudness=False)
                stats = (first.mean(0), first.std(0))
        last = math.floor(arrived * fps) - 1 if ended else math.floor((arrived - ahead) * fps)
        if last < next_frame:
            continue
        # features for frames k_a .. last + future, from audio starting exactly at frame k_a's time
        k_a = max(0, next_frame - past - margin)
        start = round(k_a / fps * RATE) - offset
        segment = buffer[start:]
        if ended:
            segment = np.pad(segment, (0, int(ahead * RATE) + RATE // 10))
        n = last + future - k_a + 1
        frames = spec.frames(segment * gain, normalise_loudness=False)
        feats = spec.windows(spec.finish(frames, stats), n, fps)
        codes = driver.codes(feats)
        for k in range(next_frame, last + 1):
            comp = driver.render_frame(feats, codes, k - k_a, pose, source_frame=driver.source(k, pose))
            yield k, to_uint8(comp.image)
        next_frame = last + 1
        keep = round(max(0, next_frame - past - margin) / fps * RATE) - offset
        buffer, offset = buffer[keep:], offset + keep
