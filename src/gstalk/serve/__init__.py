"""``gstalk serve``: live talking heads in the browser over a WebSocket.

``serve.app`` is the front end (page, WebSocket, limits), ``serve.access`` who may use it, ``serve.worker``
the render-worker interface and its in-process implementation, ``serve.cluster``/``serve.replica`` the
same on Ray Serve replicas (imported only with ``--ray``).
"""

from .app import Server, make_worker, serve
from .worker import LocalWorker, load_avatars

__all__ = ["LocalWorker", "Server", "load_avatars", "make_worker", "serve"]
