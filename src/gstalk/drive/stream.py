"""Streaming: audio chunks in, frames out, with bounded latency.

Frame k needs the audio its features read (``FeatureKind.ready_seconds``) for itself and for the frames after
it that the model's temporal context reaches (``future`` frames). With Whisper features the states of a
block of frames come from one encoder window that ends ``lookahead`` after the block, so a frame at the
start of a block waits for the block and the lookahead (0.2 s with the default 0.08 s blocks and 0.12 s
lookahead); with log-mel, 3 frames of context plus half a 160 ms window (also 0.2 s). Either way the
features are computed by the same ``FeatureKind.compute_range`` that offline rendering and training use, on
a short sliding segment of recent audio, so memory and work per frame stay bounded however long the
stream runs. With Whisper features the streamed frames are those of an offline render of the same audio.

Log-mel features normalise loudness from the first second of the stream (offline rendering uses the whole
file), so streamed log-mel frames can differ slightly from offline ones; Whisper features are not
loudness-normalised and start at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..data.frames import to_uint8
from ..media.audio import AUDIO_RATE as RATE
from ..speech.loudness import loudness_gain, loudness_level
from .driver import Driver, PoseSource, Speech


@dataclass(frozen=True)
class Prepared:
    """Frames of a stream whose speech is computed (:meth:`FrameStream.prepare`), ready to render."""

    speech: Speech | None
    """Features and predicted motion of output frames ``first ..`` (the model's context included); None
    for a reenactment (``drive.reenact.ReenactStream``), whose face moves the avatar."""
    first: int
    """The output frame of ``speech``'s first row."""
    frames: range
    """The output frames to render."""


def lookahead_seconds(driver: Driver) -> float:
    """Audio that must have arrived beyond a frame's own time before it can be rendered (worst case)."""
    return driver.future / driver.fps + driver.feature_kind.lookahead_seconds()


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
        self.kind = driver.feature_kind
        self.ahead = lookahead_seconds(driver)
        # frames computed before the model's past context, against the edge of a segment (log-mel's
        # STFT); Whisper's blocks have none
        self.margin = self.kind.stream_margin(driver.fps)
        #: frames of audio kept before the first one rendered (context, margin, the features' reach back)
        self.keep_frames = driver.past + self.margin + math.ceil(self.kind.history_seconds() * driver.fps) + 1
        self.buffer, self.offset = np.zeros(0, np.float32), 0  # offset: samples already dropped
        # kinds that normalise loudness wait for a second of audio
        self.gain: float | None = None if self.kind.loudness_gate else 1.0
        self.stats: tuple[np.ndarray, np.ndarray] | None = None
        self.next_frame = 0
        self.ended = False
        self._cache: tuple[int, np.ndarray] | None = None  # (first frame, features): see _features

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

    def last_ready(self) -> int:
        """The last frame whose audio (its own features' and its ``future`` frames') has arrived."""
        fps, future = self.driver.fps, self.driver.future
        if self.ended:
            return math.floor(self.arrived_seconds * fps + 1e-9) - 1
        k = math.floor(self.arrived_seconds * fps)
        while k >= 0 and self.kind.ready_seconds(k + future, fps) > self.arrived_seconds + 1e-9:
            k -= 1
        return k

    def catch_up(self, elapsed: float, max_behind: float) -> int:
        """Skip the frames that are overdue by more than ``max_behind`` seconds, ``elapsed`` seconds after
        the stream's audio started arriving in real time (frame k is due at k / fps plus the lookahead).
        A machine slower than the audio then shows fewer frames rather than ever later ones; audio sent
        faster than real time is never skipped. Returns how many frames were skipped."""
        if self.gain is None or self.ended:
            return 0
        fps = self.driver.fps
        overdue = math.floor((elapsed - self.ahead - max_behind) * fps)  # frames up to this one are late
        target = min(overdue + 1, self.last_ready())  # always keep the newest renderable frame
        skipped = max(0, target - self.next_frame)
        self.next_frame += skipped
        return skipped

    def end(self) -> None:
        """The audio has ended: every remaining frame is ready (its lookahead padded with silence)."""
        self.ended = True

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """The audio has ended: yields the remaining frames (their lookahead padded with silence)."""
        self.end()
        return self._frames()

    def prepare(self, until: int | None = None) -> Prepared | None:
        """The features (and predicted motion) of the next frames the audio so far completes, at most up
        to frame ``until``; the stream moves past them. None when no frame is complete. This is the speech
        half of a frame's work (the encoder, the audio → motion model); :meth:`render` is the other, so a
        server may run them on different threads."""
        driver, kind, fps = self.driver, self.kind, self.driver.fps
        if self.gain is None:
            if self.arrived_seconds < 1.0 and not self.ended:
                return None
            self.gain = loudness_gain(loudness_level(self.buffer))
            self.stats = kind.stream_stats(self.buffer * self.gain)  # the utterance so far
        last = self.last_ready() if until is None else min(self.last_ready(), until)
        if last < self.next_frame:
            return None
        # features for frames k_a .. last + future (the model's past context included)
        k_a = max(0, self.next_frame - driver.past - self.margin)
        audio = self.buffer * self.gain if self.gain != 1.0 else self.buffer
        if self.ended:
            audio = np.pad(audio, (0, kind.end_padding(self.ahead)))
        n = last + driver.future - k_a + 1
        feats = self._features(audio, k_a, n)
        prepared = Prepared(driver.speech(features=feats), k_a, range(self.next_frame, last + 1))
        self.next_frame = last + 1
        keep = max(0, round((self.next_frame - self.keep_frames) / fps * RATE) - self.offset)
        self.buffer, self.offset = self.buffer[keep:], self.offset + keep
        return prepared

    def _features(self, audio: np.ndarray, first: int, count: int) -> np.ndarray:
        """Features of frames ``first .. first + count``. Whisper's frames computed on the previous call
        are reused: each is exact wherever it was computed (its block's window had arrived), so only the
        new blocks are encoded, not the model's past context again."""
        kind = self.kind
        reuse, head = 0, None
        if kind.exact_frames and self._cache is not None:
            start, cached = self._cache
            if start <= first < start + len(cached):
                reuse = min(count, start + len(cached) - first)
                head = cached[first - start : first - start + reuse]
        if head is not None and reuse == count:
            feats = head
        else:
            feats = kind.compute_range(audio, self.offset, first + reuse, count - reuse, self.driver.fps,
                                       stats=self.stats)  # fmt: skip
            feats = np.concatenate([head, feats]) if head is not None else feats
        if kind.exact_frames:
            self._cache = (first, feats)
        return feats

    def render(self, prepared: Prepared, k: int) -> np.ndarray:
        """Frame ``k`` (one of ``prepared.frames``) as (size, size, 3) RGB uint8."""
        driver, pose = self.driver, self.pose
        comp = driver.render_frame(prepared.speech, k - prepared.first, pose, source=driver.source(k, pose),
                                   read_ahead=driver.source(k + 1, pose), frame=k)  # fmt: skip
        return to_uint8(comp.image)

    def _frames(self) -> Iterator[tuple[int, np.ndarray]]:
        prepared = self.prepare()
        for k in prepared.frames if prepared is not None else ():
            yield k, self.render(prepared, k)
