"""One live session: audio in as it arrives, JPEG frames out, rendered by the shared worker thread.

All sessions share one render worker (a single thread), because the compiled rasterizer already uses every
core: two renders side by side would only fight over them. Audio is queued per session; the worker takes
turns. A frame the client has not taken when the next is ready is dropped (a slow client gets fewer frames,
never a growing queue). The session keeps its audio and frames, bounded by its maximum duration, so the
page can download it as an mp4.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..drive import Driver, PoseSource
from ..drive.stream import FrameStream, lookahead_seconds
from ..media.audio import AUDIO_RATE
from ..media.encode import write_video

#: how far behind the audio a session may fall before frames are skipped to catch up, seconds
MAX_BEHIND_SECONDS = 0.3


@dataclass
class Avatar:
    """A trained run, loaded once at start-up and shared by its sessions."""

    name: str
    driver: Driver
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class Sent:
    """A rendered frame on its way to the page."""

    index: int
    jpeg: bytes
    audio_seconds: float  # audio that had arrived when the frame was ready


class Session:
    """Audio chunks in (:meth:`add_audio`), frames out (:meth:`next_frame`), on one asyncio loop."""

    def __init__(
        self,
        avatar: Avatar,
        worker: ThreadPoolExecutor,
        max_seconds: float,
        jpeg_quality: int,
        pose: PoseSource | None = None,
    ):
        self.id = secrets.token_urlsafe(12)
        self.avatar = avatar
        self.worker = worker
        self.max_seconds = max_seconds
        self.jpeg_quality = jpeg_quality
        self.stream = FrameStream(avatar.driver, pose)
        self.lookahead = lookahead_seconds(avatar.driver)
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[Sent | None] = asyncio.Queue()  # at most one frame, then the end
        self.audio: list[np.ndarray] = []
        self.frames: dict[int, bytes] = {}  # frame index → JPEG, as rendered (skipped frames absent)
        self.received = 0  # samples
        self.rendered = 0
        self.dropped = 0
        self.started = self.first_audio_at = time.perf_counter()
        self.closed = False
        self.complete = False  # every frame was rendered and offered to the page
        self.ending = False  # the audio has ended (the page said so, or the length limit was reached)
        self._pending: list[np.ndarray] = []
        self._busy = False
        self._guard = threading.Lock()

    @property
    def seconds(self) -> float:
        return self.received / AUDIO_RATE

    def add_audio(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 samples; the worker renders what they complete."""
        room = int(self.max_seconds * AUDIO_RATE) - self.received
        samples = samples[: max(room, 0)]
        if not len(samples) or self.closed or self.ending:
            return
        if not self.received:
            self.first_audio_at = time.perf_counter()
        self.received += len(samples)
        self.audio.append(samples)
        self._queue(samples)

    def end(self) -> None:
        """No more audio: render the remaining frames, then signal the end (None) to the page."""
        if self.ending:
            return
        self.ending = True
        self._queue(None)

    def _queue(self, item: np.ndarray | None) -> None:
        """Queue audio (or the end, None) and wake the worker for this session unless it is at work."""
        with self._guard:
            self._pending.append(item)
            start = not self._busy
            self._busy = True
        if start:
            self.worker.submit(self._render_pending)

    def close(self) -> None:
        """The page went away: stop rendering for it and free what it held."""
        self.closed = True
        self.audio, self.frames = [], {}

    def _render_pending(self) -> None:
        """On the worker thread: feed everything queued to the stream, publish the frames it completes."""
        try:
            self._render_queued()
        except Exception as err:  # a failed render ends this session, not the server
            print(f"gstalk serve: session {self.id} failed: {type(err).__name__}: {err}", file=sys.stderr)
            self.closed = True
            self.loop.call_soon_threadsafe(self._offer, None)

    def _render_queued(self) -> None:
        """One turn: everything queued so far goes to the stream in one push (one feature computation
        however many chunks arrived); then, if more arrived meanwhile, the session queues for another turn
        behind the other sessions' (round robin: a busy stream cannot starve the rest)."""
        with self._guard:
            if not self._pending or self.closed:
                self._busy = False
                return
            items, self._pending = self._pending, []
        ended = items[-1] is None  # the end is always last: nothing is queued after it
        audio = [c for c in items if c is not None]
        with self.avatar.lock:
            if audio:
                self.stream.push(np.concatenate(audio), render=False)
            # too far behind (the machine is slower than the audio): skip ahead rather than be late
            self.dropped += self.stream.catch_up(
                time.perf_counter() - self.first_audio_at, MAX_BEHIND_SECONDS
            )
            for k, image in self.stream.finish() if ended else self.stream.ready():
                if self.closed:
                    break
                self._publish(k, image)
        if ended:
            self.loop.call_soon_threadsafe(self._offer, None)
        with self._guard:
            again = bool(self._pending) and not self.closed
            self._busy = again
        if again:
            self.worker.submit(self._render_pending)

    def _publish(self, k: int, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            return
        jpeg = buf.tobytes()
        self.frames[k] = jpeg
        self.rendered += 1
        self.loop.call_soon_threadsafe(self._offer, Sent(k, jpeg, self.seconds))

    def _offer(self, item: Sent | None) -> None:
        """On the loop: hand the newest frame to the page's sender, replacing one it has not taken yet (a
        slow client gets fewer frames, never a queue). The end marker (None) always goes after the last
        frame, which it never replaces."""
        if item is not None and not self.outbox.empty():
            self.outbox.get_nowait()  # an unsent frame (the end marker is only ever offered last)
            self.dropped += 1
        self.outbox.put_nowait(item)

    def write_mp4(self, path: Path) -> Path:
        """The session so far as an H.264 + AAC mp4: every frame index up to the last rendered one, a
        skipped frame showing the one before it, so the video stays in step with its audio."""
        frames, fps = dict(self.frames), self.avatar.driver.fps
        n = max(frames) + 1 if frames else 0

        def images():
            last = None
            for k in range(n):
                last = frames.get(k, last)
                if last is not None:
                    yield cv2.imdecode(np.frombuffer(last, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]

        audio = np.concatenate(self.audio) if self.audio else np.zeros(0, np.float32)
        first = min(frames) if frames else 0  # frames before the first rendered one are not in the video
        write_video(path, images(), fps, audio[round(first / fps * AUDIO_RATE) : round(n / fps * AUDIO_RATE)])
        return path

    def stats(self) -> dict:
        return {
            "type": "stats",
            "audio_seconds": round(self.seconds, 2),
            "rendered": self.rendered,
            "dropped": self.dropped,
            "render_fps": round(self.rendered / max(time.perf_counter() - self.started, 1e-6), 1),
        }
