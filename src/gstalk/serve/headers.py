"""The headers every response of ``gstalk serve`` carries: no framing, a Content-Security-Policy for the
page, and a ``Server`` header that names no version.

- **Framing** (clickjacking: another site showing the page in a frame and steering the user's clicks to
  "Speak"): ``X-Frame-Options: DENY`` for old browsers and CSP ``frame-ancestors 'none'`` for the rest.
- **The page's CSP.** Nothing loads from anywhere but here: the page's one inline script and one inline
  style are allowed by their SHA-256 (computed from the page at start-up, so they cannot drift), the
  audio worklet by ``blob:`` (the page builds it from a string), connections only to this server's own
  origin over ``ws:``/``wss:`` (``'self'`` alone does not cover WebSockets in every browser), images only
  from ``blob:`` (the frames). No plugins, no ``<base>``, no forms.
- ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer`` (a link out of the page never
  carries its address).
- ``Server: gstalk`` instead of aiohttp's ``Python/3.x aiohttp/3.x``: a scanner learns nothing of the
  versions underneath. aiohttp writes its default only where a response has no ``Server`` header; the
  responses aiohttp's HTTP parser makes itself (400 for a malformed request, before any handler runs) get
  the same through :func:`hide_server_version`, which also keeps aiohttp from logging a traceback for
  each such request (one line instead: anyone can send them).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re

from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError

SERVER = "gstalk"

#: headers on every response
COMMON = {
    "Server": SERVER,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


def inline_hashes(html: str, tag: str) -> list[str]:
    """CSP source expressions (``'sha256-…'``) for the contents of every inline ``<tag>`` of ``html``."""
    bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    return [f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies]


def page_policy(html: str, host: str) -> str:
    """The Content-Security-Policy of the page ``html`` served under ``Host: host`` (already checked)."""
    scripts, styles = " ".join(inline_hashes(html, "script")), " ".join(inline_hashes(html, "style"))
    return "; ".join([
        "default-src 'none'",
        f"script-src {scripts} blob:",
        f"style-src {styles}",
        f"connect-src 'self' ws://{host} wss://{host}",
        "img-src blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])  # fmt: skip


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` handler: the common headers, unless the handler set its own CSP."""
    for name, value in COMMON.items():
        if name not in response.headers:
            response.headers[name] = value


def hide_server_version() -> None:
    """Make aiohttp's own default ``Server`` header (used where no handler ran) say only ``gstalk``, and
    log malformed requests in one line, without a traceback."""
    web_response.SERVER_SOFTWARE = SERVER  # read by StreamResponse._prepare_headers at each response
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _NoTracebackForBadRequests) for f in logger.filters):
        logger.addFilter(_NoTracebackForBadRequests())


class _NoTracebackForBadRequests(logging.Filter):
    """Drops the traceback of a record about a request aiohttp could not parse (the client's fault)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            record.msg = f"{record.msg}: {type(error).__name__} ({error.code})"
            record.exc_info, record.exc_text = None, None
        return True
