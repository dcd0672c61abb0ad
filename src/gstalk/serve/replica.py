"""The Ray Serve side of ``gstalk serve --ray``: render replicas, and the router that keeps a session on one.

Each replica (:class:`RenderReplica`) is a :class:`~gstalk.serve.local.LocalWorker` inside a Ray Serve
deployment: its avatars loaded once and kept warm, its speech and render threads over the cores it
reserved, its own session cap. A session lives on one replica for its whole life, because its state (the
audio stream's buffer, its frame counter) lives there; the front end (``serve.cluster.RayWorker``)
reaches it through a ``DeploymentHandle`` whose requests :class:`SessionRouter` routes
(``serve.routing.rank_replicas``):

- a request naming a ``replica=`` (every call of an open session) goes to exactly that replica. When that
  replica is gone (it died, and Serve is replacing it), the request goes to any other, which answers that
  it does not hold the session: the front end ends the session with a message rather than waiting;
- ``open`` goes to the replica reporting the most free slots (``record_routing_stats``, polled every
  second), skipping the replicas in ``exclude=`` (those that just answered "full"). The replica checks its
  own cap at ``open`` (the polled figure may be a second old); the front end then tries the others, and
  says "busy" only when every replica has answered "full".

Ray Serve's built-in choices do not do this: power-of-two-choices balances each request on its own,
model multiplexing prefers but does not guarantee a replica, and the experimental consistent-hash router
maps a session by hash (not by free slots) and moves sessions when replicas come and go. A custom
``RequestRouter`` (the API Ray Serve provides for this, ``ray.serve.request_router``) is a few lines.

Only ``serve.cluster`` imports this module, and only with ``--ray``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence

import numpy as np
from ray import serve
from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

from ..config import ServeConfig
from .routing import rank_replicas
from .worker import AvatarInfo, Busy, DriveRequest, Frame, Notice, SessionLost


class SessionRouter(RequestRouter):
    """Ray Serve's request router for the render replicas: see the module docstring and
    :func:`rank_replicas` (this class only reads the request's ``replica``/``exclude`` keyword arguments
    and the replicas' reported ``room``)."""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        kwargs = pending_request.kwargs if pending_request is not None else {}
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        rooms = [(rid, (r.routing_stats or {}).get("room")) for rid, r in by_id.items()]
        ranks = rank_replicas(rooms, kwargs.get("replica"), kwargs.get("exclude") or ())
        return [[by_id[rid] for rid in rank] for rank in ranks]


class RenderReplica:
    """One render replica: ``config``'s runs loaded (paths every node can read), ``config.max_sessions``
    sessions at most, ``config.replica_cpus`` render threads. Methods are called through the front end's
    ``DeploymentHandle``; ``replica``/``exclude`` arguments are read by :class:`SessionRouter` only."""

    def __init__(self, config: ServeConfig) -> None:
        from ..splat.threads import configure
        from .local import LocalWorker  # here, not at the top: the front end imports this module too

        configure(max(1, round(config.replica_cpus)))
        self.worker = LocalWorker.from_config(config)
        self.id = serve.get_replica_context().replica_id.unique_id

    def record_routing_stats(self) -> dict:
        """Polled by Serve's controller; :class:`SessionRouter` ranks replicas by it."""
        return {"room": self.worker.room}

    async def info(self) -> dict[str, AvatarInfo]:
        return self.worker.avatars

    async def open(self, avatar: str, exclude: Sequence[str] = (), drive: DriveRequest | None = None) -> dict:
        """``{"replica": id, "opened": Opened or None (full), "pid": process id}``, and ``"error"``: the
        message for the page when a ``drive`` video could not be used (no face, not a video)."""
        try:
            opened = await self.worker.open(avatar, drive)
        except Busy:
            return {"replica": self.id, "opened": None, "pid": os.getpid()}
        except SessionLost as err:
            return {"replica": self.id, "opened": None, "pid": os.getpid(), "error": str(err)}
        return {
            "replica": self.id,
            "opened": opened,
            "pid": os.getpid(),
        }

    async def push(
        self, session: str, audio: np.ndarray, end: bool = False, replica: str | None = None
    ) -> None:
        if len(audio):
            await self.worker.push(session, audio)
        if end:
            await self.worker.finish(session)

    async def frames(self, session: str, replica: str | None = None) -> AsyncIterator[Frame | Notice]:
        async for frame in self.worker.frames(session):
            yield frame

    async def close(self, session: str, replica: str | None = None) -> None:
        await self.worker.close(session)

    async def __del__(self) -> None:
        await self.worker.stop()
