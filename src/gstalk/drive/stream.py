"""Streaming: audio chunks in, frames out, with bounded latency.

Frame k needs the audio up to the end of the feature windows of itself and of the frames after it that
its temporal context reaches (CONTEXT // 2 - 1 frames). The lookahead is therefore fixed:
``(CONTEXT // 2 - 1) / fps + window / 2`` seconds of audio (0.2 s at 25 fps with 160 ms windows), plus the
time to compute one frame. Features are computed on a short sliding segment of recent audio, so memory and
work per frame stay bounded however long the stream runs.

Loudness is normalised from the first second of the stream (offline rendering uses the whole file), so
streamed frames can differ slightly from offline ones at the very start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from ..model.conditions import CONTEXT
from ..model.talking_head import render_portrait
from ..prepare.audio_features import audio_features, loudness_level
from .driver import Driver, PoseSource

RATE = 16_000


def _window_seconds(driver: Driver) -> float:
    return driver.ds.manifest["audio"]["window"] / driver.ds.manifest["audio"]["feature_rate_hz"]


def lookahead_seconds(driver: Driver) -> float:
    """Audio that must have arrived beyond a frame's own time before it can be rendered."""
    return (CONTEXT - CONTEXT // 2 - 1) / driver.fps + _window_seconds(driver) / 2


def stream_frames(
    driver: Driver, chunks: Iterable[np.ndarray], pose: PoseSource | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(frame index, RGB uint8 frame)`` as soon as the audio each frame needs has arrived.

    ``chunks``: 16 kHz mono float32 arrays of any length (e.g. 20 ms from a microphone). When the iterable
    ends, the remaining frames are flushed with their lookahead padded with silence.
    """
    pose = pose or PoseSource()
    fps = driver.fps
    kind = driver.ds.manifest["audio"]["features"]
    window = _window_seconds(driver)
    ahead = lookahead_seconds(driver)
    margin = math.ceil(window * fps) + 1  # frames of audio before the first one used, against edge effects
    buffer, offset = np.zeros(0, np.float32), 0  # offset: samples already dropped from the front
    level: float | None = None
    next_frame, ended = 0, False
    source = iter(chunks)
    while not ended:
        try:
            buffer = np.concatenate([buffer, np.asarray(next(source), dtype=np.float32).reshape(-1)])
        except StopIteration:
            ended = True
        arrived = (offset + buffer.size) / RATE
        if level is None:
            if arrived < 1.0 and not ended:
                continue
            level = loudness_level(buffer)
        last = math.floor(arrived * fps) - 1 if ended else math.floor((arrived - ahead) * fps)
        if last < next_frame:
            continue
        # features for frames k_a .. last + CONTEXT // 2, from audio starting exactly at frame k_a's time
        k_a = max(0, next_frame - CONTEXT // 2 - margin)
        start = round(k_a / fps * RATE) - offset
        segment = buffer[start:]
        if ended:
            segment = np.pad(segment, (0, int(ahead * RATE) + RATE // 10))
        if level > 1e-6:
            segment = segment * (0.05 / level)
        n = last + CONTEXT // 2 - k_a + 1
        feats = audio_features(segment, n, fps, kind, window_ms=1000 * window, normalise=False).features
        for k in range(next_frame, last + 1):
            yield k, _render_one(driver, feats, k - k_a, k, pose)
        next_frame = last + 1
        keep = round(max(0, next_frame - CONTEXT // 2 - margin) / fps * RATE) - offset
        buffer, offset = buffer[keep:], offset + keep


@torch.no_grad()
def _render_one(driver: Driver, feats: np.ndarray, local: int, k: int, pose: PoseSource) -> np.ndarray:
    s = driver.source(k, pose)
    frame = driver.model(driver.condition(feats, local, s))
    comp = render_portrait(frame, driver.camera(s, pose), driver.layer(s), backend=driver.backend)
    return (comp.image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
