"""``gstalk serve``: live talking heads in the browser over a WebSocket.

``serve.app`` is the front end (page, WebSocket, limits), ``serve.access`` who may use it, ``serve.worker``
the render-worker interface, ``serve.local`` its in-process implementation, ``serve.cluster`` and
``serve.replica`` the same on Ray Serve replicas (imported only with ``--ray``). The front end imports no
model code: a front end over Ray replicas never loads PyTorch.
"""

from __future__ import annotations

from typing import Any

from .app import Server, make_worker, serve

__all__ = ["LocalWorker", "Server", "load_avatars", "make_worker", "serve"]


def __getattr__(name: str) -> Any:  # the in-process worker, loaded when asked for (it brings PyTorch)
    if name in ("LocalWorker", "load_avatars"):
        from . import local

        return getattr(local, name)
    raise AttributeError(name)
