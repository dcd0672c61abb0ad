"""Sessions on a render worker: audio in as it arrives, JPEG frames out, shared fairly by two threads.

Every session of a worker is a :class:`RenderSession` (its audio, its ``drive.stream.FrameStream``) on one
:class:`Scheduler`, whose two threads take the sessions in turn:

- the **speech thread** computes the features and the predicted motion of the frames a session's audio
  completes (``FrameStream.prepare``: Whisper's encoder, the audio → motion model), a few frames per turn;
- the **render thread** renders **one frame per turn** (``FrameStream.render``); a third thread
  JPEG-encodes and emits it meanwhile (at most :data:`ENCODING` frames wait for it), so the rasterizer
  goes on to the next frame while one core compresses the last.

So the encoder never holds up a frame, and one session's frame waits for at most one frame of each other
session. The compiled rasterizer already uses every core the worker has: two renders side by side would
only fight over them, hence one render thread.

The threads share the GIL between the compiled kernels and the encoders' calls, which release it. Python
hands it over every 5 ms by default, so a thread coming back from a kernel could wait that long, each
time, while another runs Python; the scheduler shortens the interval to :data:`SWITCH_SECONDS` (for the
whole process): two 512² sessions went from 12.8 to 17.9 frames/s each, measured on a loaded machine.

**Pacing.** Frame k of a session is due ``k / fps`` after its first audio arrived (its *clock*). A frame
is prepared and rendered at most :data:`RENDER_LEAD_SECONDS` before it is due, so a client sending audio
faster than real time gets its frames at real-time pace instead of taking the worker for as long as its
audio lasts. Its audio waits, up to ``max_queue`` seconds beyond real time; past that the oldest audio is
dropped (its frames are skipped: the session's clock moves on) and the session is told once, with a
:class:`~gstalk.serve.worker.Notice`. A session that falls behind its clock (the machine is slower than
the audio) skips frames more than :data:`MAX_BEHIND_SECONDS` overdue rather than showing ever later ones;
skipped frames are counted (``Frame.skipped``). What reaches the page, and what is kept for the
download, is the front end's business (``serve.session``).
"""

from __future__ import annotations

import collections
import math
import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from ..drive import Driver, PoseSource
from ..drive.reenact import ReenactStream
from ..drive.stream import FrameStream, Prepared
from ..media.audio import AUDIO_RATE
from .worker import Emitted, Frame, Notice, SessionFailed

#: how far behind its clock a session may fall before frames are skipped to catch up, seconds
MAX_BEHIND_SECONDS = 0.3
#: how long before it is due a frame may be prepared and rendered, seconds
RENDER_LEAD_SECONDS = 0.5
#: frames whose speech one turn of the speech thread computes at most (one session's turn stays short)
SPEECH_FRAMES_PER_TURN = 8
#: longest a scheduler thread sleeps before looking at its sessions again, seconds
POLL_SECONDS = 0.05
#: rendered frames waiting for their JPEG encoding at most (the render thread waits beyond)
ENCODING = 2
#: the GIL's switch interval while the scheduler runs, seconds (Python's default is 0.005)
SWITCH_SECONDS = 0.0005


@dataclass
class Avatar:
    """A trained run, loaded once at start-up and shared by its sessions."""

    name: str
    driver: Driver


class RenderSession:
    """One session's audio (:meth:`add_audio`, :meth:`end`) and the frames it emits through ``emit``.

    ``emit`` is called on the scheduler's threads and on the caller's; it must only hand the item over
    (e.g. ``loop.call_soon_threadsafe``). ``max_seconds``: audio accepted in all; ``max_queue``: audio
    beyond real time kept waiting before the oldest is dropped (seconds). Scheduling state is guarded by
    the scheduler's lock; the stream's speech side is used by the speech thread only, its render side by
    the render thread only."""

    def __init__(
        self,
        avatar: Avatar,
        scheduler: Scheduler,
        emit: Callable[[Emitted], None],
        max_seconds: float,
        jpeg_quality: int,
        pose: PoseSource | None = None,
        max_queue: float = 10.0,
        stream: FrameStream | ReenactStream | None = None,
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.avatar = avatar
        self.scheduler = scheduler
        self.emit = emit
        self.max_seconds = max_seconds
        self.max_queue = max_queue
        self.jpeg_quality = jpeg_quality
        # speech moves the avatar, or (``stream``) a driving video's face, paced by its sound
        self.stream = stream if stream is not None else FrameStream(avatar.driver, pose)
        self.fps = avatar.driver.fps
        self.received = 0  # samples
        self.skipped = 0  # frames
        self.dropped_seconds = 0.0  # audio dropped for arriving too far ahead of real time
        self.origin: float | None = None  # the clock: frame k is due at origin + k / fps (perf_counter)
        # the last audio, or the last frame taken (an idle session is reaped)
        self.last_seen = time.monotonic()
        self.closed = False
        self.ending = False  # the audio has ended (end() was called)
        self.pending: list[np.ndarray] = []  # audio not yet given to the stream
        self.end_pushed = False  # the stream knows the audio has ended
        self.all_prepared = False  # every frame's speech is computed (after the end)
        self.held = False  # the stream has frames ready that pacing holds back
        self.speaking = False  # the speech thread is working on this session
        self.frames: collections.deque[tuple[int, Prepared]] = collections.deque()  # ready to render
        self.done = False  # the end (None) was emitted
        self.told = False  # the session was told its audio is dropped

    # --- the caller's side (the worker's event loop) ------------------------------------------------
    def add_audio(self, samples: np.ndarray) -> None:
        """Queue 16 kHz mono float32 samples (beyond the session's length they are ignored). Audio more than
        ``max_queue`` seconds ahead of real time drops the oldest waiting audio, and says so once."""
        self.last_seen = time.monotonic()
        room = int(self.max_seconds * AUDIO_RATE) - self.received
        samples = samples[: max(room, 0)]
        if not len(samples) or self.closed or self.ending:
            return
        with self.scheduler.lock:
            now = time.perf_counter()
            if self.origin is None:
                self.origin = now
            self.received += len(samples)
            self.pending.append(samples)
            ahead = self.received / AUDIO_RATE - (now - self.origin)
            excess = ahead - self.max_queue
            if excess > 0:  # the oldest audio goes: its frames are now overdue, and skipped
                self.origin -= excess
                self.dropped_seconds += excess
            self.scheduler.lock.notify_all()
        if excess > 0 and not self.told:
            self.told = True
            self.emit(Notice(f"audio is arriving faster than real time: more than {self.max_queue:g} s "
                             "waited, so the oldest was dropped (send it as it plays)"))  # fmt: skip

    def end(self) -> None:
        """No more audio: render the remaining frames, then emit None."""
        with self.scheduler.lock:
            if self.ending or self.closed:
                return
            self.ending = True
            self.scheduler.lock.notify_all()

    def close(self) -> None:
        """Stop rendering for this session (what is queued is dropped)."""
        with self.scheduler.lock:
            self.closed = True
            self.pending, self.frames = [], collections.deque()
            self.scheduler.lock.notify_all()

    # --- the scheduler's side (under its lock) ------------------------------------------------------
    def due(self, k: int) -> float:
        """When frame k is due (``time.perf_counter`` seconds)."""
        return (self.origin or 0.0) + k / self.fps

    def horizon(self, now: float) -> int:
        """The last frame that may be prepared or rendered at ``now`` (at most the lead before it is due)."""
        if self.origin is None:
            return -1
        return math.floor((now - self.origin + RENDER_LEAD_SECONDS) * self.fps + 1e-9)

    def wants_speech(self, now: float) -> bool:
        if self.closed or self.speaking or self.all_prepared:
            return False
        if self.pending or (self.ending and not self.end_pushed):
            return True
        return self.held and self.stream.next_frame <= self.horizon(now)

    def next_render(self, now: float) -> tuple[int, Prepared] | None:
        """The frame to render now (overdue ones skipped, but never the newest ready), else None."""
        elapsed = now - (self.origin or now)
        late = self.stream.ahead + MAX_BEHIND_SECONDS
        while len(self.frames) > 1 and self.frames[0][0] / self.fps + late < elapsed:
            self.frames.popleft()
            self.skipped += 1
        if self.frames and self.frames[0][0] <= self.horizon(now):
            return self.frames.popleft()
        return None

    # --- the threads' work (outside the lock) -------------------------------------------------------
    def speak(self, audio: list[np.ndarray], end: bool, now: float) -> tuple[Prepared | None, int, bool]:
        """On the speech thread: push ``audio``, end the stream if ``end``, skip what is overdue, and
        compute the next frames' speech (at most :data:`SPEECH_FRAMES_PER_TURN`, none beyond the pacing
        horizon). Returns (prepared or None, frames skipped, whether ready frames are held back)."""
        stream = self.stream
        if audio:
            stream.push(np.concatenate(audio), render=False)
        if end:
            stream.end()
        skipped = stream.catch_up(now - (self.origin or now), MAX_BEHIND_SECONDS)
        until = min(self.horizon(now), stream.next_frame + SPEECH_FRAMES_PER_TURN - 1)
        prepared = stream.prepare(until)
        return prepared, skipped, stream.last_ready() >= stream.next_frame

    def publish(self, k: int, image: np.ndarray) -> None:
        """Encode frame k (RGB uint8) as JPEG and emit it."""
        ok, buf = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if ok:
            self.emit(Frame(k, buf.tobytes(), self.received / AUDIO_RATE, self.skipped, time.time()))

    def fail(self, err: Exception) -> None:
        """A failed render ends this session, not the worker."""
        print(f"gstalk serve: session {self.id} failed: {type(err).__name__}: {err}", file=sys.stderr)
        self.close()
        self.emit(SessionFailed(f"rendering failed for this session ({type(err).__name__}); start again"))


class Scheduler:
    """The speech thread and the render thread of one worker, over its sessions (module docstring).

    Threads start with the first session and stop with :meth:`stop`."""

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.sessions: list[RenderSession] = []
        self._turn = {"speech": 0, "render": 0}  # round robin: where each thread looks first
        self._threads: list[threading.Thread] = []
        self._running = True
        self._jpeg = ThreadPoolExecutor(1, thread_name_prefix="gstalk-jpeg")  # in order: the end comes last
        self._encoding = threading.Semaphore(ENCODING)

    def add(self, session: RenderSession) -> None:
        with self.lock:
            self.sessions.append(session)
            if not self._threads:
                sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_SECONDS))
                for name, loop in (("speech", self._speech_loop), ("render", self._render_loop)):
                    thread = threading.Thread(target=loop, name=f"gstalk-{name}", daemon=True)
                    thread.start()
                    self._threads.append(thread)
            self.lock.notify_all()

    def remove(self, session: RenderSession) -> None:
        session.close()
        with self.lock:
            if session in self.sessions:
                self.sessions.remove(session)

    def stop(self) -> None:
        with self.lock:
            self._running = False
            for session in self.sessions:
                session.closed = True
            self.lock.notify_all()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._jpeg.shutdown(wait=False, cancel_futures=True)

    def _next(self, kind: str, usable: Callable[[RenderSession], bool]) -> RenderSession | None:
        """The first usable session from where ``kind``'s thread left off (round robin)."""
        n = len(self.sessions)
        start = self._turn[kind]
        for i in range(n):
            session = self.sessions[(start + i) % n]
            if usable(session):
                self._turn[kind] = (start + i + 1) % n
                return session
        return None

    def _speech_loop(self) -> None:
        while True:
            with self.lock:
                session = None
                while self._running:
                    now = time.perf_counter()
                    session = self._next("speech", lambda s, now=now: s.wants_speech(now))
                    if session is not None:
                        break
                    self.lock.wait(POLL_SECONDS)
                if not self._running:
                    return
                audio, session.pending = session.pending, []
                end = session.ending and not session.end_pushed
                session.end_pushed |= end
                session.speaking = True
            prepared, skipped, held = None, 0, False
            try:
                prepared, skipped, held = session.speak(audio, end, now)
            except Exception as err:
                session.fail(err)
            with self.lock:
                session.speaking = False
                session.skipped += skipped
                session.held = held
                if prepared is not None and not session.closed:
                    session.frames.extend((k, prepared) for k in prepared.frames)
                if session.end_pushed and not held:  # nothing is left to prepare
                    session.all_prepared = True
                self.lock.notify_all()

    def _render_loop(self) -> None:
        while True:
            with self.lock:
                picked = None
                while self._running:
                    picked = self._pick_render(time.perf_counter())
                    if picked is not None:
                        break
                    self.lock.wait(POLL_SECONDS)
                if not self._running:
                    return
            session, (k, prepared) = picked
            try:
                image = session.stream.render(prepared, k)
            except Exception as err:
                session.fail(err)
                continue
            while not self._encoding.acquire(timeout=POLL_SECONDS):
                if not self._running:
                    return
            self._jpeg.submit(self._publish, session, k, image)

    def _publish(self, session: RenderSession, k: int, image: np.ndarray) -> None:
        """On the JPEG thread: encode and emit frame k."""
        try:
            session.publish(k, image)
        except Exception as err:
            session.fail(err)
        finally:
            self._encoding.release()

    def _pick_render(self, now: float) -> tuple[RenderSession, tuple[int, Prepared]] | None:
        """The next session in turn with a frame to render now, and the frame; sessions whose every frame
        is out get their end (None) on the way."""
        n, start = len(self.sessions), self._turn["render"]
        for i in range(n):
            session = self.sessions[(start + i) % n]
            if session.closed or session.done:
                continue
            job = session.next_render(now)
            if job is not None:
                self._turn["render"] = (start + i + 1) % n
                return session, job
            if session.all_prepared and not session.frames:
                session.done = True
                self._jpeg.submit(session.emit, None)  # after its last frame's encoding
        return None
