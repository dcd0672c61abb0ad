"""``gstalk serve --ray``: the front end's side of the Ray Serve render replicas (``serve.replica``).

:meth:`RayWorker.start` joins a Ray cluster (``--ray ADDRESS`` or ``auto``), or starts one on this machine
(``--ray local``: loopback only), deploys the replicas as the Serve application ``gstalk`` (no Serve HTTP
proxy: this front end is the only way in), and waits until every replica has loaded its avatars.

Per session, the front end makes one long streaming call (``frames``: every frame as it is rendered) and a
short call per batch of audio (``push``): while one push is on its way, the audio that arrives meanwhile
waits and goes in the next, so a session has at most one push in flight, whatever the page's chunk size.
Every call names the session's replica, and :class:`~gstalk.serve.replica.SessionRouter` routes it there.

When a replica dies, its streaming calls fail at once (Ray reports the actor's death), and its sessions
end with :data:`STOPPED` on the page; Serve starts a replacement, and the other replicas' sessions go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np

from ..config import ServeConfig
from ..errors import GstalkError
from .worker import AvatarInfo, Busy, DriveRequest, Frame, Opened, SessionLost

#: what the page is told when its replica stops
STOPPED = "the render worker for this session stopped; start again"
#: the Serve application's name
APP = "gstalk"
#: replicas tried for one ``open`` at most (each that is full is excluded from the next try)
MAX_OPEN_TRIES = 64


def _lost(err: BaseException) -> SessionLost:
    """A Ray error on a session's call → the message for its page."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, SessionLost) and "rendering failed" in str(cause):
        return SessionLost(str(cause))
    return SessionLost(STOPPED)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Raise :class:`GstalkError` when ``address``, a Ray head's ``HOST:PORT``, takes no TCP connection
    within ``timeout`` seconds (``ray.init`` would retry for minutes). Other forms (``auto``,
    ``ray://…``) are left to Ray, which fails on its own."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as err:
        raise GstalkError(
            f"no Ray cluster answers at {address} ({err.strerror or err})",
            "start one with `ray start --head` on the head node (its address is printed), or use --ray local",
        ) from None


def connect(address: str, cpus: float = 0.0) -> bool:
    """Join the Ray cluster at ``address`` (``auto``: this machine's), or start one here (``local``, with
    this machine's cores as its CPUs, or ``cpus`` if more: Ray's CPUs are a count to reserve from, and the
    replicas asked for must fit). Returns whether it was started here. Raises GstalkError without ray, or
    when the cluster is not there."""
    # both are read when ray is first imported: no API call may start a Ray instance of its own (Ray's
    # "auto-connect", e.g. from a Serve thread after shutdown), and a cluster of this machine alone listens
    # on loopback only (Ray would otherwise pick the address other machines reach it by)
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    if address == "local":
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise GstalkError("--ray needs Ray Serve, which is not installed",
                          'pip install -e ".[ray]" (or pip install "ray[serve]")') from None  # fmt: skip
    if ray.is_initialized():
        return False
    try:
        if address == "local":
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            ray.init(
                num_cpus=max(cores or 1, math.ceil(cpus)), include_dashboard=False, logging_level="WARNING"
            )
            return True
        check_reachable(address)
        ray.init(address=address, logging_level="WARNING")
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise GstalkError(
            f"cannot join the Ray cluster at {address}: {err}",
            "start one with `ray start --head` on the head node, or use --ray local",
        ) from None
    return False


def deploy(config: ServeConfig):
    """Deploy the render replicas of ``config`` and return the Serve ``DeploymentHandle`` to them, once
    every replica has loaded its avatars. Raises GstalkError when the deployment fails (e.g. a run is not
    readable on a node)."""
    import ray
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from .replica import RenderReplica, SessionRouter

    replicas = config.replicas or max(1, int(ray.cluster_resources().get("CPU", 0) // config.replica_cpus))
    # the replicas need the runs (as absolute paths) and the render options, never the access token
    runs = tuple(Path(r).resolve() for r in config.run)
    replica_config = dataclasses.replace(config, run=runs, ray=None, token=None, token_file=None)
    deployment = serve.deployment(RenderReplica, name="RenderReplica").options(
        num_replicas=replicas,
        # a session holds one streaming call, plus at most one push, open or close at a time
        max_ongoing_requests=4 * config.max_sessions + 8,
        ray_actor_options={"num_cpus": config.replica_cpus},
        request_router_config=RequestRouterConfig(
            request_router_class=SessionRouter, request_routing_stats_period_s=1.0
        ),
        graceful_shutdown_timeout_s=2.0,
        health_check_period_s=2.0,
        # no line per call (25 a second per session) in the front end's output; warnings and errors stay
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    serve.start(proxy_location="Disabled")
    total = ray.cluster_resources().get("CPU", 0)
    print(f"gstalk serve: starting {replicas} render replica(s) of {config.replica_cpus:g} CPU(s) on Ray "
          f"(the cluster has {total:g} CPUs)", file=sys.stderr, flush=True)  # fmt: skip
    try:
        return serve.run(deployment.bind(replica_config), name=APP, route_prefix=None)
    except RuntimeError as err:
        raise GstalkError(
            f"the render replicas did not start: {err}",
            "see the replica's error above; every node must read the --run folders at the same path",
        ) from None


def _check_runs(config: ServeConfig) -> None:
    """Runs the replicas will load: on this machine alone they must be here; on a cluster, the nodes must
    read them (this machine may not)."""
    if not config.run:
        raise GstalkError("no avatar to serve", "pass --run RUN (a folder written by `gstalk train`)")
    for run in config.run:
        if Path(run).is_dir():
            continue
        if config.ray == "local":
            raise GstalkError(
                f"the run {run} is not a folder", "pass --run RUN (a folder written by `gstalk train`)"
            )
        print(f"gstalk serve: warning: {run} is not a folder here; every node of the cluster must read it",
              file=sys.stderr)  # fmt: skip


class _Uplink:
    """A session's audio on its way to its replica: at most one ``push`` in flight; what arrives meanwhile
    goes in the next. The end of the audio follows the last of it."""

    def __init__(self, handle, session: str, replica: str) -> None:
        self.handle, self.session, self.replica = handle, session, replica
        self.pending: list[np.ndarray] = []
        self.ending = False
        self.error: SessionLost | None = None
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    def add(self, audio: np.ndarray) -> None:
        if self.error is not None:
            raise self.error
        self.pending.append(audio)
        self.wake.set()

    def end(self) -> None:
        if self.error is not None:
            raise self.error
        self.ending = True
        self.wake.set()

    async def _run(self) -> None:
        from ray.exceptions import RayError

        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                audio, self.pending, end = self.pending, [], self.ending
                batch = np.concatenate(audio) if audio else np.zeros(0, np.float32)
                await self.handle.push.remote(self.session, batch, end=end, replica=self.replica)
                if end:
                    return
        except RayError as err:
            self.error = _lost(err)


class RayWorker:
    """The render worker interface (``serve.worker``) over Ray Serve replicas.

    ``placement``: session → (replica id, replica process id), for tests and benchmarks."""

    def __init__(self, handle, avatars: dict[str, AvatarInfo], started_ray: bool) -> None:
        self.handle = handle
        self.avatars = avatars
        self.started_ray = started_ray
        self.placement: dict[str, tuple[str, int]] = {}
        self.uplinks: dict[str, _Uplink] = {}
        self.stopped = False

    @classmethod
    def start(cls, config: ServeConfig) -> RayWorker:
        """Join or start the cluster (``config.ray``), deploy the replicas, read their avatars."""
        _check_runs(config)
        started = connect(config.ray or "auto", (config.replicas or 0) * config.replica_cpus)
        try:
            handle = deploy(config)
            avatars = handle.info.remote().result()
        except BaseException:
            if started:
                import ray

                ray.shutdown()
            raise
        print(f"gstalk serve: render replicas ready on Ray ({'started here' if started else config.ray})",
              file=sys.stderr, flush=True)  # fmt: skip
        return cls(handle, avatars, started)

    async def open(self, avatar: str, drive: DriveRequest | None = None) -> Opened:
        """Try the replicas, most free slots first; :class:`Busy` only when every one answers "full";
        :class:`SessionLost` with the replica's message when it could not use a ``drive`` video."""
        from ray.exceptions import RayError

        tried: set[str] = set()
        for _ in range(MAX_OPEN_TRIES):
            try:
                answer = await self.handle.open.remote(avatar, exclude=sorted(tried), drive=drive)
            except RayError as err:
                raise SessionLost(
                    f"no render worker answered ({type(err).__name__}); try again shortly"
                ) from None
            if answer.get("error"):
                raise SessionLost(answer["error"])
            opened = answer["opened"]
            if opened is not None:
                self.placement[opened.session] = (answer["replica"], answer["pid"])
                self.uplinks[opened.session] = _Uplink(self.handle, opened.session, answer["replica"])
                return opened
            if answer["replica"] in tried:
                break
            tried.add(answer["replica"])
        raise Busy(f"the server is busy (all {len(tried)} render workers are full); try again shortly")

    def _uplink(self, session: str) -> _Uplink:
        uplink = self.uplinks.get(session)
        if uplink is None:
            raise SessionLost(STOPPED)
        return uplink

    async def push(self, session: str, audio: np.ndarray) -> None:
        self._uplink(session).add(audio)

    async def finish(self, session: str) -> None:
        self._uplink(session).end()

    async def frames(self, session: str) -> AsyncIterator[Frame]:
        """The replica's frames for ``session``; raises SessionLost with :data:`STOPPED` when it dies."""
        from ray.exceptions import RayError

        replica = self.placement[session][0]
        stream = self.handle.options(method_name="frames", stream=True).remote(session, replica=replica)
        done = False
        try:
            async for frame in stream:
                yield frame
            done = True
        except RayError as err:
            raise _lost(err) from None
        finally:
            if done:  # the session is over on its replica: forget it here too
                self.uplinks.pop(session, None)
                self.placement.pop(session, None)
            else:
                stream.cancel()

    async def close(self, session: str) -> None:
        uplink = self.uplinks.pop(session, None)
        placed = self.placement.pop(session, None)
        if uplink is not None:
            uplink.task.cancel()
        if placed is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.handle.close.remote(session, replica=placed[0]), 5.0)

    async def stop(self) -> None:
        """Close every session, delete the Serve application, and stop Ray if it was started here (once)."""
        if self.stopped:
            return
        self.stopped = True
        for session in list(self.uplinks):
            await self.close(session)
        await asyncio.to_thread(_teardown, self.started_ray)


def _teardown(started_ray: bool) -> None:
    import ray
    from ray import serve

    if not ray.is_initialized():  # Serve's calls would start a Ray instance of their own
        return
    with contextlib.suppress(Exception):
        if started_ray:
            serve.shutdown()  # the controller too: the cluster goes with this process
        else:
            serve.delete(APP)  # the cluster stays; the replicas' CPUs are freed
    if started_ray:
        ray.shutdown()
