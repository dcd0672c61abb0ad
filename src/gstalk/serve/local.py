"""The in-process render worker: sessions rendered by this process's speech and render threads (see
``serve.worker`` for the interface, ``serve.render`` for how the threads share the sessions)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..config import ServeConfig
from ..drive import Driver, PoseSource
from ..drive.reenact import ReenactStream, reenact_upload
from ..drive.stream import lookahead_seconds
from ..errors import GstalkError
from ..media.audio import AUDIO_RATE
from .render import Avatar, RenderSession, Scheduler
from .worker import (
    AvatarInfo,
    Busy,
    DriveRequest,
    Emitted,
    Frame,
    Notice,
    Opened,
    SessionFailed,
    SessionLost,
)

#: a session that neither sent audio nor took a frame for this long is closed (its front end is gone)
IDLE_SECONDS = 60.0


def load_avatars(
    runs: tuple[Path, ...] | list[Path],
    size: int | None,
    device: str,
    max_avatars: int,
    speech_model: Path | None = None,
) -> dict[str, Avatar]:
    """Load every run as an avatar named after its folder (``_`` appended to repeated names), each warmed
    up. Raises GstalkError when there is none or too many, and whatever ``Driver`` raises for a run."""
    if not runs:
        raise GstalkError("no avatar to serve", "pass --run RUN (a folder written by `gstalk train`)")
    if len(runs) > max_avatars:
        raise GstalkError(f"{len(runs)} runs given; at most {max_avatars} are served",
                          "serve fewer avatars, or raise --max-avatars")  # fmt: skip
    avatars: dict[str, Avatar] = {}
    for run in runs:
        name = Path(run).resolve().name
        while name in avatars:
            name += "_"
        driver = Driver(run, size=size, device=device, speech_model=speech_model)
        warm_up(driver)
        avatars[name] = Avatar(name, driver)
    return avatars


def warm_up(driver: Driver) -> None:
    """Render one frame, so the compiled rasterizer's first-use compilation and the first allocations
    happen at start-up, not in the first visitor's first seconds."""
    noise = np.random.default_rng(0).normal(0.0, 0.05, AUDIO_RATE // 2).astype(np.float32)
    driver.render_frame(driver.speech(noise, n_frames=2), 0, PoseSource())


class _Live:
    """A session on a :class:`LocalWorker`: its renderer and the frames it emitted, not yet taken."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[Emitted] = asyncio.Queue()
        self.loop = loop
        self.render: RenderSession | None = None

    def emit(self, item: Emitted) -> None:  # on the render thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


class LocalWorker:
    """Sessions rendered by this process's :class:`~gstalk.serve.render.Scheduler`, at most
    ``max_sessions`` at once.

    ``max_seconds``: audio per session; ``max_queue``: seconds of audio a session may send ahead of real
    time before its oldest is dropped; ``pose``: makes each session's :class:`PoseSource`. Call every
    method on one asyncio loop."""

    def __init__(
        self,
        avatars: dict[str, Avatar],
        max_sessions: int,
        max_seconds: float,
        jpeg_quality: int,
        pose: Callable[[], PoseSource] = PoseSource,
        max_queue: float = 10.0,
    ) -> None:
        self._avatars = avatars
        self.max_sessions = max_sessions
        self.max_seconds = max_seconds
        self.max_queue = max_queue
        self.jpeg_quality = jpeg_quality
        self.pose = pose
        self.scheduler = Scheduler()
        self.tracker = ThreadPoolExecutor(1, thread_name_prefix="gstalk-track")  # driving videos
        self.sessions: dict[str, _Live] = {}
        self.avatars = {
            name: AvatarInfo(name, a.driver.size, a.driver.fps, lookahead_seconds(a.driver))
            for name, a in avatars.items()
        }

    @classmethod
    def from_config(cls, config: ServeConfig) -> LocalWorker:
        """Load ``config.run`` and make the worker ``config`` describes."""
        c = config
        avatars = load_avatars(c.run, c.size, c.device, c.max_avatars, c.speech_model)
        return cls(avatars, config.max_sessions, config.max_session_seconds, config.jpeg_quality,
                   lambda: PoseSource(config.pose, config.still_frame), config.max_queue_seconds)  # fmt: skip

    @property
    def room(self) -> int:
        """Sessions this worker would still open."""
        return max(0, self.max_sessions - len(self.sessions))

    def _reap_idle(self) -> None:
        now = time.monotonic()
        for sid, live in list(self.sessions.items()):
            if live.render is not None and now - live.render.last_seen > IDLE_SECONDS:
                self.scheduler.remove(live.render)
                del self.sessions[sid]

    async def open(self, avatar: str, drive: DriveRequest | None = None) -> Opened:
        """Raises KeyError for an unknown avatar, :class:`Busy` when every slot is taken, and (with a
        ``drive`` video) :class:`SessionLost` when it cannot be read or shows no face. A driving video is
        tracked on the worker's tracking thread (one video at a time) before the session opens; its slot
        is held meanwhile."""
        info = self.avatars[avatar]
        self._reap_idle()
        if not self.room:
            raise Busy(f"the server is busy ({len(self.sessions)} sessions); try again shortly")
        live = _Live(asyncio.get_running_loop())
        stream = await self._drive_stream(avatar, drive, live) if drive is not None else None
        live.render = RenderSession(self._avatars[avatar], self.scheduler, live.emit, self.max_seconds,
                                    self.jpeg_quality, self.pose(), self.max_queue, stream)  # fmt: skip
        self.sessions[live.render.id] = live
        self.scheduler.add(live.render)
        return Opened(live.render.id, info)

    async def _drive_stream(self, avatar: str, drive: DriveRequest, live: _Live) -> ReenactStream:
        """The uploaded video tracked and transferred onto the avatar, its slot held meanwhile."""
        placeholder = f"tracking-{secrets.token_urlsafe(8)}"
        self.sessions[placeholder] = live
        try:
            return await live.loop.run_in_executor(self.tracker, reenact_upload, self._avatars[avatar].driver,
                                                   drive.video, drive.pose, self.max_seconds,
                                                   self.pose())  # fmt: skip
        except GstalkError as err:
            raise SessionLost(f"{err.problem} ({err.fix})" if err.fix else err.problem) from None
        finally:
            self.sessions.pop(placeholder, None)

    def _render(self, session: str) -> RenderSession:
        live = self.sessions.get(session)
        if live is None or live.render is None:
            raise SessionLost("this session is not on this render worker; start again")
        return live.render

    async def push(self, session: str, audio: np.ndarray) -> None:
        self._render(session).add_audio(np.asarray(audio, np.float32).reshape(-1))

    async def finish(self, session: str) -> None:
        self._render(session).end()

    async def close(self, session: str) -> None:
        live = self.sessions.pop(session, None)
        if live is not None and live.render is not None:
            self.scheduler.remove(live.render)

    async def frames(self, session: str) -> AsyncIterator[Frame | Notice]:
        """Every frame of ``session`` as it is rendered (and its notices); ends after the last. Leaving
        early (the caller stops iterating, or is cancelled) closes the session. Raises
        :class:`SessionLost`."""
        render = self._render(session)
        live = self.sessions[session]
        try:
            while True:
                item = await live.queue.get()
                if item is None:
                    return
                if isinstance(item, SessionFailed):
                    raise SessionLost(str(item))
                render.last_seen = time.monotonic()
                yield item
        finally:
            await self.close(session)

    async def stop(self) -> None:
        for sid in list(self.sessions):
            await self.close(sid)
        self.tracker.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.scheduler.stop)
