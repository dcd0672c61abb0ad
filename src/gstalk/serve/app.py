"""``gstalk serve``: one page where a person picks an avatar, speaks or plays a file, and watches it talk.

This module is the front end: the page, the WebSocket, the checks (``serve.access``) and the limits. The
frames come from a render worker (``serve.worker``): this process's own render thread, or Ray Serve
replicas (``serve.cluster``, with ``--ray``); the protocol is the same.

Transport (see docs/architecture.md): a WebSocket. The page sends 16 kHz mono float32 audio as it is
captured (microphone) or played (a file, decoded in the page); the server answers with JPEG frames, each
tagged with its index, which the page shows against its own audio clock. On loopback a frame costs well
under a millisecond to deliver, so the latency is the stream's lookahead plus one frame's compute.

Messages:
- page → server: ``{"type": "start", "avatar": NAME}``; then binary float32 audio; ``{"type": "end"}``.
- server → page: ``{"type": "ready", ...limits}`` or ``{"type": "error", "message": ...}`` (also mid-session,
  when the session cannot go on, or sent too little audio to keep its place; the connection then closes);
  binary frames (uint32 index, float32 seconds of audio received when it was ready, then the JPEG);
  ``{"type": "stats"}`` twice a second; ``{"type": "notice", "message": ...}`` (e.g. audio dropped for
  arriving faster than real time); ``{"type": "limit"}`` when the session reaches its audio or its time
  limit (its last frames follow); ``{"type": "end", "download": URL}`` when the last frame is sent, and
  then the server closes the connection.

Limits (``ServeConfig``): audio per session, a session's length in time, a minimum audio rate after a
grace period (a client trickling a few samples cannot hold a slot), audio queued ahead of real time
(``serve.render``), and text messages' size and nesting (``serve.messages``).

Nothing the page sends becomes a path: avatars are the runs given on the command line, downloads are looked
up by a random session id among the sessions this process kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import sys
import tempfile
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
from aiohttp import WSMsgType, web

from ..config import ServeConfig
from ..errors import GstalkError
from ..media.audio import AUDIO_RATE
from .access import WILDCARD_HOSTS, Access, access_for, is_loopback
from .headers import add_headers, hide_server_version, page_policy
from .messages import BadMessage, parse_message
from .session import Session
from .tls import server_context
from .upload import CHUNK, Upload, Uploads, upload_sound
from .worker import Busy, DriveRequest, Notice, RenderWorker, SessionLost

#: finished sessions kept for download (oldest dropped first)
KEPT_SESSIONS = 8
#: largest audio message accepted, in samples (the page sends about 20 ms at a time)
MAX_CHUNK = AUDIO_RATE
#: how often a session's limits are looked at, seconds
WATCH_SECONDS = 0.5
#: after a session's time limit, how long its last frames may take before the connection is closed, seconds
DRAIN_SECONDS = 30.0


class Server:
    """The front end over one render worker; ``access`` None admits everyone (in-process tests)."""

    def __init__(self, config: ServeConfig, worker: RenderWorker, access: Access | None = None) -> None:
        self.config = config
        self.worker = worker
        self.access = access
        self.live: set[Session] = set()
        self.finished: OrderedDict[str, Session] = OrderedDict()
        self.downloads = Path(tempfile.mkdtemp(prefix="gstalk-serve-"))
        self.encoder = ThreadPoolExecutor(1, thread_name_prefix="gstalk-mp4")
        self.html = resources.files(__package__).joinpath("page.html").read_text()
        self.uploads = Uploads()  # driving videos (serve.upload)

    def app(self) -> web.Application:
        middlewares = [self.access.middleware] if self.access is not None else []
        app = web.Application(client_max_size=1024**2, middlewares=middlewares)
        hide_server_version()
        app.on_response_prepare.append(add_headers)
        app.add_routes([
            web.get("/", self.page),
            web.get("/avatars", self.list_avatars),
            web.get("/ws", self.websocket),
            web.get("/download/{session}", self.download),
            web.post("/drive", self.upload_drive),
            web.get("/drive/{upload}.wav", self.drive_sound),
        ])  # fmt: skip
        app.on_shutdown.append(self.shutdown)
        return app

    async def page(self, request: web.Request) -> web.Response:
        policy = page_policy(self.html, request.headers.get("Host", ""))
        return web.Response(text=self.html, content_type="text/html",
                            headers={"Content-Security-Policy": policy})  # fmt: skip

    async def list_avatars(self, request: web.Request) -> web.Response:
        first = next(iter(self.worker.avatars.values()))
        return web.json_response({
            "avatars": list(self.worker.avatars), "size": first.size, "fps": first.fps,
            "max_seconds": self.config.max_session_seconds, "max_upload_mb": self.config.max_upload_mb,
            "live_sessions": len(self.live), "kept_sessions": len(self.finished),
        })  # fmt: skip

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=4 * MAX_CHUNK + 1024, heartbeat=10)
        await ws.prepare(request)
        session: Session | None = None
        tasks: list[asyncio.Task] = []
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = parse_message(msg.data)
                    except BadMessage as err:
                        await ws.send_json({"type": "error", "message": str(err)})
                        continue
                    kind = data.get("type")
                    if kind == "start" and session is None:
                        drive = (data["drive"], data.get("drive_pose") is True) if "drive" in data else None
                        session = await self._start(ws, data.get("avatar"), drive)
                        if session is not None:
                            jobs = (self._pump(ws, session), self._send_frames(ws, session),
                                    self._send_stats(ws, session), self._watch(ws, session))  # fmt: skip
                            tasks = [asyncio.create_task(job) for job in jobs]
                    elif kind == "end" and session is not None:
                        await self._end_audio(ws, session)
                elif msg.type == WSMsgType.BINARY and session is not None:
                    await self._audio(ws, session, msg.data)
            if tasks:
                await asyncio.wait([tasks[1]], timeout=1.0)
        finally:
            for task in tasks:
                task.cancel()
            if session is not None and not session.complete:
                # the page went away mid-session: stop rendering for it and free its frames
                self.live.discard(session)
                session.close()
                with contextlib.suppress(Exception):
                    await self.worker.close(session.id)
        return ws

    async def _start(self, ws: web.WebSocketResponse, name, drive: tuple[object, bool] | None = None
                     ) -> Session | None:  # fmt: skip
        """Open a session on the worker; ``drive``: (an upload's id, follow the head pose) when a video
        drives it."""
        if not isinstance(name, str) or name not in self.worker.avatars:
            await ws.send_json({"type": "error", "message": f"unknown avatar {name!r}"})
            return None
        request = None
        if drive is not None:
            upload = self.uploads.take(drive[0])
            if upload is None:
                await ws.send_json({"type": "error", "message": "no such video upload (each is used once, "
                                    "for 10 minutes at most); upload the video again"})  # fmt: skip
                return None
            request = DriveRequest(upload.video, drive[1])
        try:
            opened = await self.worker.open(name, request)
        except (Busy, SessionLost) as err:
            await ws.send_json({"type": "error", "message": str(err)})
            return None
        session = Session(opened.session, opened.avatar, self.config.max_session_seconds)
        self.live.add(session)
        await ws.send_json({
            "type": "ready", "session": session.id, "fps": opened.avatar.fps, "size": opened.avatar.size,
            "rate": AUDIO_RATE, "lookahead": opened.avatar.lookahead, "max_seconds": session.max_seconds,
        })  # fmt: skip
        return session

    async def _audio(self, ws: web.WebSocketResponse, session: Session, data: bytes) -> None:
        samples = np.frombuffer(data[: 4 * (len(data) // 4)], np.float32)[:MAX_CHUNK]
        before = session.seconds
        samples = session.add_audio(np.nan_to_num(samples).clip(-1, 1))
        if len(samples):
            try:
                await self.worker.push(session.id, samples)
            except SessionLost as err:
                await self._lost(ws, session, err)
                return
        if session.seconds >= session.max_seconds > before:
            message = f"this session reached its {session.max_seconds:g} s limit"
            await ws.send_json({"type": "limit", "message": message})
            await self._end_audio(ws, session)

    async def _end_audio(self, ws: web.WebSocketResponse, session: Session) -> None:
        if session.ending or session.closed:
            return
        session.ending = True
        try:
            await self.worker.finish(session.id)
        except SessionLost as err:
            await self._lost(ws, session, err)

    async def _pump(self, ws: web.WebSocketResponse, session: Session) -> None:
        """Every frame from the worker: recorded, and offered to the page; notices sent on; then the end."""
        try:
            async for item in self.worker.frames(session.id):
                if isinstance(item, Notice):
                    with contextlib.suppress(ConnectionResetError, RuntimeError):
                        await ws.send_json({"type": "notice", "message": item.message})
                    continue
                session.record(item)
                session.offer(item)
            session.offer(None)
        except SessionLost as err:
            await self._lost(ws, session, err)

    async def _watch(self, ws: web.WebSocketResponse, session: Session) -> None:
        """The session's time limit and its minimum audio rate, looked at every :data:`WATCH_SECONDS`.

        At ``max_session_minutes`` the audio ends (the page is told; its last frames and the download
        follow), and if the frames have not drained :data:`DRAIN_SECONDS` later the connection is closed.
        From ``audio_grace_seconds`` on, a session that sent less than ``min_audio_rate`` seconds of audio
        per second over the last ``audio_grace_seconds`` loses its place (the page is told why)."""
        c = self.config
        limit, grace = c.max_session_minutes * 60.0, c.audio_grace_seconds
        marks: deque[tuple[float, float]] = deque([(time.monotonic(), 0.0)])  # (time, audio seconds then)
        while not (ws.closed or session.closed or session.complete):
            await asyncio.sleep(WATCH_SECONDS)
            now = time.monotonic()
            age = now - session.opened_at
            marks.append((now, session.seconds))
            while len(marks) > 1 and marks[1][0] <= now - grace:
                marks.popleft()  # marks[0] stays the newest mark at least ``grace`` old
            if age >= limit + DRAIN_SECONDS:
                over = f"this session ran past its {c.max_session_minutes:g} min limit and was closed"
                await self._lost(ws, session, SessionLost(over))
            elif age >= limit and not session.ending:
                with contextlib.suppress(ConnectionResetError, RuntimeError):
                    await ws.send_json({"type": "limit", "message": f"this session reached its "
                                        f"{c.max_session_minutes:g} min limit"})  # fmt: skip
                await self._end_audio(ws, session)
            elif not session.ending and age >= grace and marks[0][0] <= now - grace:
                sent = session.seconds - marks[0][1]
                if sent < c.min_audio_rate * grace:
                    message = (f"this session sent {sent:.1f} s of audio in the last {grace:g} s (at least "
                               f"{c.min_audio_rate * grace:g} s are needed to keep a place), so it was ended "
                               "to let others in; start again")  # fmt: skip
                    await self._lost(ws, session, SessionLost(message))

    async def _lost(self, ws: web.WebSocketResponse, session: Session, err: Exception) -> None:
        """The session cannot go on: tell the page why, and close its connection."""
        if session.closed:
            return
        self.live.discard(session)
        session.close()
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await ws.send_json({"type": "error", "message": str(err)})
        await ws.close()

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
        await ws.close()  # one connection, one session

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
            await asyncio.get_running_loop().run_in_executor(self.encoder, session.write_mp4, path)
        return web.FileResponse(path, headers={"Content-Disposition": 'attachment; filename="gstalk.mp4"'})

    async def upload_drive(self, request: web.Request) -> web.Response:
        """``POST /drive``: a driving video, at most ``--max-upload-mb`` (see ``serve.upload``); answers
        its id, length and whether it has sound, or 400/413 with what is wrong."""
        limit = int(self.config.max_upload_mb * 1e6)
        too_big = f"the video is over the {self.config.max_upload_mb:g} MB limit"
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(limit, request.content_length, text=too_big)
        data = bytearray()
        async for chunk in request.content.iter_chunked(CHUNK):
            data += chunk
            if len(data) > limit:
                raise web.HTTPRequestEntityTooLarge(limit, len(data), text=too_big)
        if not data:
            raise web.HTTPBadRequest(text="the upload is empty: send the video file as the request body")
        loop = asyncio.get_running_loop()
        try:
            wav, seconds, sound = await loop.run_in_executor(
                self.encoder, upload_sound, bytes(data), self.config.max_session_seconds, self.downloads
            )
        except GstalkError as err:
            raise web.HTTPBadRequest(text=f"{err.problem} ({err.fix})" if err.fix else err.problem) from None
        key = self.uploads.add(Upload(bytes(data), wav, seconds, sound, time.monotonic()))
        return web.json_response({"drive": key, "seconds": round(seconds, 2), "has_sound": sound})

    async def drive_sound(self, request: web.Request) -> web.Response:
        """``GET /drive/ID.wav``: the sound of an upload (16 kHz mono), for the page to play and stream."""
        upload = self.uploads.get(request.match_info["upload"])
        if upload is None:
            raise web.HTTPNotFound(text="no such video upload (each is kept for 10 minutes at most)")
        return web.Response(body=upload.wav, content_type="audio/wav")

    async def shutdown(self, app: web.Application) -> None:
        for session in list(self.live) + list(self.finished.values()):
            session.close()
        await self.worker.stop()
        self.encoder.shutdown(wait=False, cancel_futures=True)
        for p in self.downloads.glob("*.mp4"):
            p.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.downloads.rmdir()


def make_worker(config: ServeConfig) -> RenderWorker:
    """This process's render thread, or Ray Serve replicas with ``--ray`` (ray is imported only then)."""
    if config.ray is None:
        from .local import LocalWorker

        return LocalWorker.from_config(config)
    from .cluster import RayWorker

    return RayWorker.start(config)


def _browse_url(config: ServeConfig, scheme: str, token: str | None, generated: bool) -> str:
    host = config.host
    if host.lower() in WILDCARD_HOSTS:
        import socket

        host = socket.getfqdn() or socket.gethostname()
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    url = f"{scheme}://{host}:{config.port}/"
    if token is not None:
        url += f"?token={token}" if generated else "?token=<the token you gave>"
    return url


def serve(config: ServeConfig) -> None:
    """Check the options, start the render worker and serve the page until interrupted.

    Raises GstalkError for bad access or TLS options (before any avatar is loaded)."""
    access, generated = access_for(config)
    ssl_context = server_context(config.certfile, config.keyfile)
    scheme = "https" if ssl_context is not None else "http"
    if not is_loopback(config.host) and ssl_context is None:
        print(f"gstalk serve: warning: serving {config.host} over plain http: the token travels in clear "
              "text, and browsers give the microphone only to https pages (or localhost); "
              "give --certfile/--keyfile", file=sys.stderr)  # fmt: skip
    worker = make_worker(config)
    server = Server(config, worker, access)
    url = _browse_url(config, scheme, access.token, generated)
    ready = f"gstalk serve: {len(worker.avatars)} avatar(s) on {url}"
    # printed once the port is bound (run_app calls it after start-up), so a script may connect on seeing it
    try:
        web.run_app(server.app(), host=config.host, port=config.port, ssl_context=ssl_context,
                    print=lambda _: print(ready, flush=True))  # fmt: skip
    except OSError as err:
        raise GstalkError(f"cannot listen on {config.host}:{config.port}: {err.strerror or err}",
                          "pick another --port, or stop what uses this one") from None  # fmt: skip
