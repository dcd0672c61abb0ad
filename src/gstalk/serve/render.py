"""One session on a render worker: audio in as it arrives, JPEG frames out, on the worker's one thread.

All sessions of a worker share one thread, because the compiled rasterizer already uses every core the
worker has: two renders side by side would only fight over them. Audio is queued per session; the thread
takes turns. A session that falls behind real time skips its overdue frames rather than showing ever
later ones (counted as ``skipped``). Every frame rendered is handed to ``emit``; what reaches the page,
and what is kept for the download, is the front end's business (``serve.session``).
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..drive import Driver, PoseSource
from ..drive.reenact import ReenactStream
from ..drive.stream import FrameStream
from ..media.audio import AUDIO_RATE
from .worker import Emitted, Frame, SessionFailed

#: how far behind the audio a session may fall before frames are skipped to catch up, seconds
MAX_BEHIND_SECONDS = 0.3


@dataclass
class Avatar:
    """A trained run, loaded once at start-up and shared by its sessions (one render at a time)."""

    name: str
    driver: Driver
    lock: threading.Lock = field(default_factory=threading.Lock)


class RenderSession:
    """Audio chunks in (:meth:`add_audio`, :meth:`end`), frames out through ``emit`` (called on the
    render thread; it must only hand the item over, e.g. ``loop.call_soon_threadsafe``)."""

    def __init__(
        self,
        avatar: Avatar,
        worker: ThreadPoolExecutor,
        emit: Callable[[Emitted], None],
        max_seconds: float,
        jpeg_quality: int,
        pose: PoseSource | None = None,
        stream: FrameStream | ReenactStream | None = None,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.avatar = avatar
        self.worker = worker
        self.emit = emit
        self.max_seconds = max_seconds
        self.jpeg_quality = jpeg_quality
        # speech moves the avatar, or (``stream``) a driving video's face, paced by its sound
        self.stream = stream if stream is not None else FrameStream(avatar.driver, pose)
        self.received = 0  # samples
        self.skipped = 0
        self.first_audio_at = time.perf_counter()
        # the last audio, or the last frame taken (an idle session is reaped)
        self.last_seen = time.monotonic()
        self.closed = False
        self.ending = False
        self._pending: list[np.ndarray | None] = []
        self._busy = False
        self._guard = threading.Lock()

    def add_audio(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 samples (beyond the session's length they are ignored)."""
        self.last_seen = time.monotonic()
        room = int(self.max_seconds * AUDIO_RATE) - self.received
        samples = samples[: max(room, 0)]
        if not len(samples) or self.closed or self.ending:
            return
        if not self.received:
            self.first_audio_at = time.perf_counter()
        self.received += len(samples)
        self._queue(samples)

    def end(self) -> None:
        """No more audio: render the remaining frames, then emit None."""
        if self.ending or self.closed:
            return
        self.ending = True
        self._queue(None)

    def close(self) -> None:
        """Stop rendering for this session (what is queued is dropped)."""
        self.closed = True

    def _queue(self, item: np.ndarray | None) -> None:
        """Queue audio (or the end, None) and wake the worker for this session unless it is at work."""
        with self._guard:
            self._pending.append(item)
            start = not self._busy
            self._busy = True
        if start:
            self.worker.submit(self._render_pending)

    def _render_pending(self) -> None:
        """On the worker thread: feed everything queued to the stream, emit the frames it completes."""
        try:
            self._render_queued()
        except Exception as err:  # a failed render ends this session, not the worker
            print(f"gstalk serve: session {self.id} failed: {type(err).__name__}: {err}", file=sys.stderr)
            self.closed = True
            self.emit(SessionFailed(f"rendering failed for this session ({type(err).__name__}); start again"))

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
            self.skipped += self.stream.catch_up(
                time.perf_counter() - self.first_audio_at, MAX_BEHIND_SECONDS
            )
            for k, image in self.stream.finish() if ended else self.stream.ready():
                if self.closed:
                    break
                self._publish(k, image)
        if ended and not self.closed:
            self.emit(None)
        with self._guard:
            again = bool(self._pending) and not self.closed
            self._busy = again
        if again:
            self.worker.submit(self._render_pending)

    def _publish(self, k: int, image: np.ndarray) -> None:
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if ok:
            seconds = self.received / AUDIO_RATE
            self.emit(Frame(k, buf.tobytes(), seconds, self.skipped, time.time()))
