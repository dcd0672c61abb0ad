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
    stream = FrameStream(driver, pose)
    for chunk in chunks:
        yield from stream.push(chunk)
    yield from stream.finish()


class FrameStream:
    """The push side of :func:`stream_frames`: feed audio as it arrives, take the frames it completes.

    Nothing blocks waiting for audio, so one worker thread can serve several streams in turn (``serve``).
    """

    def __init__(self, driver: Driver, pose: PoseSource | None = None) -> None:
        self.driver = driver
        self.pose = pose or PoseSource()
        self.spec = driver.ds.audio_spec
        self.spec.check_computable()
        self.ahead = lookahead_seconds(driver)
        # frames of audio kept before the first one used, against edge effects
        self.margin = math.ceil(self.spec.window_seconds * driver.fps) + 1
        self.buffer, self.offset = np.zeros(0, np.float32), 0  # offset: samples already dropped
        self.gain: float | None = None
        self.stats: tuple[np.ndarray, np.ndarray] | None = None
        self.next_frame = 0
        self.ended = False

    @property
    def arrived_seconds(self) -> float:
        return (self.offset + self.buffer.size) / RATE

    def push(self, chunk: np.ndarray, render: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """Add audio; yields the frames it completes (none with ``render=False``: take them later with
        :meth:`ready`)."""
        if self.ended:
            raise ValueError("the stream has ended")
        self.buffer = np.concatenate([self.buffer, np.asarray(chunk, dtype=np.float32).reshape(-1)])
        return self._frames() if render else iter(())

    def ready(self) -> Iterator[tuple[int, np.ndarray]]:
        """The frames the audio so far completes."""
        return self._frames()

    def catch_up(self, elapsed: float, max_behind: float) -> int:
        """Skip the frames that are overdue by more than ``max_behind`` seconds, ``elapsed`` seconds after
        the stream's audio started arriving in real time (frame k is due at k / fps plus the lookahead).
        A machine slower than the audio then shows fewer frames rather than ever later ones; audio sent
        faster than real time is never skipped. Returns how many frames were skipped."""
        if self.gain is None or self.ended:
            return 0
        fps = self.driver.fps
        overdue = math.floor((elapsed - self.ahead - max_behind) * fps)  # frames up to this one are late
        renderable = math.floor((self.arrived_seconds - self.ahead) * fps)
        target = min(overdue + 1, renderable)  # always keep the newest renderable frame
        skipped = max(0, target - self.next_frame)
        self.next_frame += skipped
        return skipped

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """The audio has ended: yields the remaining frames (their lookahead padded with silence)."""
        self.ended = True
        return self._frames()

    def _frames(self) -> Iterator[tuple[int, np.ndarray]]:
        driver, spec, fps = self.driver, self.spec, self.driver.fps
        arrived = self.arrived_seconds
        if self.gain is None:
            if arrived < 1.0 and not self.ended:
                return
            self.gain = loudness_gain(loudness_level(self.buffer))
            if spec.normalisation == "utterance":  # the utterance so far: its first second
                first = spec.frames(self.buffer * self.gain, normalise_loudness=False)
                self.stats = (first.mean(0), first.std(0))
        last = math.floor(arrived * fps) - 1 if self.ended else math.floor((arrived - self.ahead) * fps)
        if last < self.next_frame:
            return
        # features for frames k_a .. last + future, from audio starting exactly at frame k_a's time
        k_a = max(0, self.next_frame - driver.past - self.margin)
        segment = self.buffer[round(k_a / fps * RATE) - self.offset :]
        if self.ended:
            segment = np.pad(segment, (0, int(self.ahead * RATE) + RATE // 10))
        n = last + driver.future - k_a + 1
        frames = spec.frames(segment * self.gain, normalise_loudness=False)
        feats = spec.windows(spec.finish(frames, self.stats), n, fps)
        codes = driver.codes(feats)
        for k in range(self.next_frame, last + 1):
            source = driver.source(k, self.pose)
            comp = driver.render_frame(feats, codes, k - k_a, self.pose, source_frame=source)
            self.next_frame = k + 1
            yield k, to_uint8(comp.image)
        keep = round(max(0, self.next_frame - driver.past - self.margin) / fps * RATE) - self.offset
        self.buffer, self.offset = self.buffer[keep:], self.offset + keep
