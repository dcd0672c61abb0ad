"""``gstalk serve``: live talking heads in the browser over a WebSocket (see ``serve.app``)."""

from .app import Server, load_avatars, serve

__all__ = ["Server", "load_avatars", "serve"]
