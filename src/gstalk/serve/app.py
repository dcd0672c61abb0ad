"""``gstalk serve``: one page where a person picks an avatar, speaks or plays a file, and watches it talk.

Transport (see docs/architecture.md): a WebSocket. The page sends 16 kHz mono float32 audio as it is
captured (microphone) or played (a file, decoded in the page); the server answers with JPEG frames, each
tagged with its index, which the page shows against its own audio clock. On loopback a frame costs well
under a millisecond to deliver, so the latency is the stream's lookahead plus one frame's compute.

Messages:
- page → server: ``{"type": "start", "avatar": NAME}``; then binary float32 audio; ``{"type": "end"}``.
- server → page: ``{"type": "ready", ...limits}`` or ``{"type": "error", "message": ...}``; binary frames
  (uint32 index, float32 seconds of audio received when it was ready, then the JPEG); ``{"type": "stats"}``
  twice a second; ``{"type": "limit"}`` when the session reaches its length; ``{"type": "end", "download":
  URL}`` when the last frame is sent.

Nothing the page sends becomes a path: avatars are the runs given on the command line, downloads are looked
up by a random session id among the sessions this process kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import sys
import tempfile
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
from aiohttp import WSMsgType, web

from ..config import ServeConfig
from ..drive import Driver, PoseSource
from ..errors import GstalkError
from ..media.audio import AUDIO_RATE
from .session import Avatar, Session

#: finished sessions kept for download (oldest dropped first)
KEPT_SESSIONS = 8
#: largest audio message accepted, in samples (the page sends about 20 ms at a time)
MAX_CHUNK = AUDIO_RATE


def load_avatars(config: ServeConfig) -> dict[str, Avatar]:
    if not config.run:
        raise GstalkError("no avatar to serve", "pass --run RUN (a folder written by `gstalk train`)")
    if len(config.run) > config.max_avatars:
        raise GstalkError(f"{len(config.run)} runs given; at most {config.max_avatars} are served",
                          "serve fewer avatars, or raise --max-avatars")  # fmt: skip
    avatars: dict[str, Avatar] = {}
    for run in config.run:
        name = Path(run).resolve().name
        while name in avatars:
            name += "_"
        driver = Driver(run, size=config.size, device=config.device)
        warm_up(driver)
        avatars[name] = Avatar(name, driver)
    return avatars


def warm_up(driver: Driver) -> None:
    """Render one frame, so the compiled rasterizer's first-use compilation and the first allocations
    happen at start-up, not in the first visitor's first seconds."""
    noise = np.random.default_rng(0).normal(0.0, 0.05, AUDIO_RATE // 2).astype(np.float32)
    driver.render_frame(driver.speech(noise, n_frames=2), 0, PoseSource())


class Server:
    def __init__(self, config: ServeConfig, avatars: dict[str, Avatar]) -> None:
        self.config = config
        self.avatars = avatars
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="gstalk-render")
        self.live: set[Session] = set()
        self.finished: OrderedDict[str, Session] = OrderedDict()
        self.downloads = Path(tempfile.mkdtemp(prefix="gstalk-serve-"))

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024**2)
        app.add_routes([
            web.get("/", self.page),
            web.get("/avatars", self.list_avatars),
            web.get("/ws", self.websocket),
            web.get("/download/{session}", self.download),
        ])  # fmt: skip
        app.on_shutdown.append(self.shutdown)
        return app

    async def page(self, request: web.Request) -> web.Response:
        html = resources.files(__package__).joinpath("page.html").read_text()
        return web.Response(text=html, content_type="text/html")

    async def list_avatars(self, request: web.Request) -> web.Response:
        first = next(iter(self.avatars.values())).driver
        return web.json_response({
            "avatars": list(self.avatars), "size": first.size, "fps": first.fps,
            "max_seconds": self.config.max_session_seconds, "max_upload_mb": self.config.max_upload_mb,
            "live_sessions": len(self.live), "kept_sessions": len(self.finished),
        })  # fmt: skip

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * MAX_CHUNK + 1024, heartbeat=10)
        await ws.prepare(request)
        session: Session | None = None
        sender: asyncio.Task | None = None
        ticker: asyncio.Task | None = None
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        await ws.send_json({"type": "error", "message": "messages must be JSON"})
                        continue
                    kind = data.get("type") if isinstance(data, dict) else None
                    if kind == "start" and session is None:
                        session = await self._start(ws, data.get("avatar"))
                        if session is not None:
                            sender = asyncio.create_task(self._send_frames(ws, session))
                            ticker = asyncio.create_task(self._send_stats(ws, session))
                    elif kind == "end" and session is not None:
                        session.end()
                elif msg.type == WSMsgType.BINARY and session is not None:
                    samples = np.frombuffer(msg.data[: 4 * (len(msg.data) // 4)], np.float32)[:MAX_CHUNK]
                    before = session.seconds
                    session.add_audio(np.nan_to_num(samples).clip(-1, 1))
                    if session.seconds >= session.max_seconds > before:
                        await ws.send_json(
                            {
                                "type": "limit",
                                "message": f"this session reached its {session.max_seconds:g} s limit",
                            }
                        )
                        session.end()
            if sender is not None:
                await asyncio.wait([sender], timeout=1.0)
        finally:
            for task in (sender, ticker):
                if task is not None:
                    task.cancel()
            if session is not None and not session.complete:
                # the page went away mid-session: stop rendering for it and free its frames
                self.live.discard(session)
                session.close()
        return ws

    async def _start(self, ws: web.WebSocketResponse, name) -> Session | None:
        if not isinstance(name, str) or name not in self.avatars:
            await ws.send_json({"type": "error", "message": f"unknown avatar {name!r}"})
            return None
        if len(self.live) >= self.config.max_sessions:
            await ws.send_json(
                {
                    "type": "error",
                    "message": f"the server is busy ({len(self.live)} sessions); try again shortly",
                }
            )
            return None
        avatar = self.avatars[name]
        pose = PoseSource(self.config.pose, self.config.still_frame)
        session = Session(
            avatar, self.worker, self.config.max_session_seconds, self.config.jpeg_quality, pose
        )
        self.live.add(session)
        await ws.send_json({
            "type": "ready", "session": session.id, "fps": avatar.driver.fps, "size": avatar.driver.size,
            "rate": AUDIO_RATE, "lookahead": session.lookahead, "max_seconds": session.max_seconds,
        })  # fmt: skip
        return session

    async def _send_frames(self, ws: web.WebSocketResponse, session: Session) -> None:
        while True:
            item = await session.outbox.get()
            if item is None:
                break
            await ws.send_bytes(struct.pack("<If", item.index, item.audio_seconds) + item.jpeg)
        session.complete = True
        self.live.discard(session)
        self._keep(session)  # for its download, from now on
        await ws.send_json({**session.stats(), "type": "end", "download": f"/download/{session.id}"})

    async def _send_stats(self, ws: web.WebSocketResponse, session: Session) -> None:
        while not ws.closed:
            await asyncio.sleep(0.5)
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await ws.send_json(session.stats())

    def _keep(self, session: Session) -> None:
        self.finished[session.id] = session
        while len(self.finished) > KEPT_SESSIONS:
            _, old = self.finished.popitem(last=False)
            old.close()
            (self.downloads / f"{old.id}.mp4").unlink(missing_ok=True)

    async def download(self, request: web.Request) -> web.StreamResponse:
        session = self.finished.get(request.match_info["session"])
        if session is None:
            raise web.HTTPNotFound(text="no such session (sessions are kept until 8 newer ones end)")
        path = self.downloads / f"{session.id}.mp4"
        if not path.is_file():
            await asyncio.get_running_loop().run_in_executor(self.worker, session.write_mp4, path)
        return web.FileResponse(path, headers={"Content-Disposition": 'attachment; filename="gstalk.mp4"'})

    async def shutdown(self, app: web.Application) -> None:
        for session in list(self.live) + list(self.finished.values()):
            session.close()
        self.worker.shutdown(wait=False, cancel_futures=True)
        for p in self.downloads.glob("*.mp4"):
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.downloads.rmdir()


def serve(config: ServeConfig) -> None:
    """Load the avatars and serve the page until interrupted."""
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"gstalk serve: warning: listening on {config.host}: anyone who can reach this machine can use "
              "it (there is no authentication)", file=sys.stderr)  # fmt: skip
    server = Server(config, load_avatars(config))
    ready = f"gstalk serve: {len(server.avatars)} avatar(s) on http://{config.host}:{config.port}/"
    # printed once the port is bound (run_app calls it after start-up), so a script may connect on seeing it
    web.run_app(server.app(), host=config.host, port=config.port, print=lambda _: print(ready, flush=True))
