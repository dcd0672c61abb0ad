"""Who may use ``gstalk serve``: the Host and Origin every request names, a token, and a rate limit.

Three attacks shape it (docs/architecture.md, "Serving"):

- **Another host on the network** reaching the port: every non-loopback ``--host`` needs a token. It is
  generated (``secrets.token_urlsafe``) and printed at start-up as a full URL, or given by the operator
  (``--token-file``, ``GSTALK_TOKEN``, or ``--token``). The page URL carries it once (``?token=``); the
  server answers with an HttpOnly, SameSite=Strict cookie and a redirect to the bare URL, and from then on
  the cookie (or an ``Authorization: Bearer`` header, for scripts) carries it. Tokens are compared in
  constant time (``hmac.compare_digest``).
- **Another web page in the user's own browser** (cross-site WebSocket hijacking): a page on any site can
  open ``ws://127.0.0.1:8000/ws``, and the browser sends that page's ``Origin``. An ``Origin`` is accepted
  only when it names the same host and port as the request's ``Host`` (the page was served from here) or
  is one the operator listed (``--allow-origin``); a request without one (scripts) is judged by ``Host``
  and the token alone. ``Origin: null`` (sandboxed frames, ``file:``) is refused.
- **DNS rebinding**: a page on ``evil.example`` whose name then resolves to 127.0.0.1 reaches the server
  as same-origin, but its requests say ``Host: evil.example:8000``. A ``Host`` is accepted only when it
  names this server: the address the connection reached, loopback names on a loopback connection
  (``127.0.0.1``, ``localhost``, ``[::1]``), the ``--host`` given, this machine's own names, and the
  names the operator listed (``--allow-host``); with the port the connection reached, or none (a proxy
  on the default port).

Rate limits come after those checks, in two buckets per client address: a request that passes them spends
a token of the address's bucket (``--rate-burst`` requests at once, refilled at ``--rate-per-minute``); a
request they refuse spends one of a separate bucket of the same size. An empty bucket gets 429. A page
on another site, or a DNS-rebinding page, in the user's own browser comes from the user's own address:
its refused requests empty only the refused bucket, so they never lock the user out of the server. A
refused request gets its status and a one-line text, never page data or frames.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from yarl import URL

from ..config import ServeConfig
from ..errors import GstalkError

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
#: the environment variable an operator may keep the token in (not visible in ``ps``)
TOKEN_ENV = "GSTALK_TOKEN"
MIN_TOKEN_CHARS = 16
#: client addresses whose buckets are remembered at most (the least recently seen are forgotten)
MAX_CLIENTS = 10_000


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine only."""
    name = host.strip().lower().strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _bracket(address: str) -> str:
    """An address as it appears in a ``Host`` header: IPv6 in brackets, names lowercased."""
    address = address.strip().lower().rstrip(".")
    if ":" in address and not address.startswith("["):
        return f"[{address}]"
    return address


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host``-header syntax → (name, port or None); None when it is not a host at all."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, _, port = value.partition(":")
        rest = f":{port}" if _ else ""
    if rest and (not rest.startswith(":") or not rest[1:].isdigit()):
        return None
    name = name.rstrip(".")
    if not name or any(c in name for c in "/@?#\\ "):
        return None
    return name, (int(rest[1:]) if rest else None)


def _origin_authority(origin: str) -> str | None:
    """``scheme://host[:port]`` → ``host[:port]`` without the scheme's default port; None if malformed."""
    try:
        url = URL(origin.strip())
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not url.host or url.path not in ("", "/"):
        return None
    host = _bracket(url.host)
    return host if url.is_default_port() else f"{host}:{url.port}"


def normalize_origin(origin: str) -> str | None:
    """``Origin`` syntax → ``scheme://host[:port]`` (lowercase, no default port); None if malformed."""
    authority = _origin_authority(origin)
    return None if authority is None else f"{URL(origin.strip()).scheme.lower()}://{authority}"


def _host_authority(host: str, scheme: str) -> str | None:
    parsed = split_host(host)
    if parsed is None:
        return None
    name, port = parsed
    default = 443 if scheme == "https" else 80
    return name if port in (None, default) else f"{name}:{port}"


def _machine_names() -> frozenset[str]:
    names = {socket.gethostname(), socket.getfqdn()}
    return frozenset(_bracket(n) for n in names if n)


@dataclass
class RateLimiter:
    """A token bucket per client address: ``burst`` requests at once, refilled at ``per_minute``."""

    burst: int
    per_minute: float
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def allow(self, client: str) -> bool:
        """Spend one token of ``client``'s bucket; False when it is empty."""
        now = self.clock()
        tokens, then = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.per_minute / 60.0)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        while len(self._buckets) > MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, client: str) -> int:
        """Seconds until ``client``'s bucket holds a token again (for the ``Retry-After`` header)."""
        tokens, _ = self._buckets.get(client, (0.0, 0.0))
        return max(1, round((1.0 - tokens) * 60.0 / max(self.per_minute, 1e-9)))


def read_token(config: ServeConfig) -> str | None:
    """The operator's token: ``--token-file``, else ``GSTALK_TOKEN``, else ``--token``; None when none.

    Raises GstalkError when the file is missing or unreadable, when two sources are given, or when the
    token is shorter than 16 characters."""
    if config.token_file is not None and config.token is not None:
        raise GstalkError("both --token and --token-file given", "give one of them")
    token, source = config.token, "--token"
    if config.token_file is not None:
        try:
            token, source = Path(config.token_file).read_text().strip(), "--token-file"
        except OSError as err:
            raise GstalkError(
                f"cannot read the token file {config.token_file}: {err.strerror or err}",
                "point --token-file at a readable file holding the token on one line",
            ) from None
    elif token is None and os.environ.get(TOKEN_ENV):
        token, source = os.environ[TOKEN_ENV].strip(), TOKEN_ENV
    if token is not None and (len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token)):
        raise GstalkError(
            f"the token from {source} is too short or holds spaces (at least {MIN_TOKEN_CHARS} characters)",
            "use a long random token, e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))'",
        )
    return token


@dataclass
class Access:
    """The rules for one server: who may connect, and with what.

    ``token`` None means no token is asked (loopback only; :func:`access_for` refuses it elsewhere).
    ``cookie`` is the cookie's name; it carries the port, since browsers share cookies across the ports
    of one host."""

    bind_host: str
    allow_hosts: frozenset[str] = frozenset()
    allow_origins: frozenset[str] = frozenset()
    token: str | None = None
    cookie: str = "gstalk_token"
    limiter: RateLimiter = field(default_factory=lambda: RateLimiter(30, 60.0))
    """Requests that passed the checks, per client address."""
    refused: RateLimiter = field(default_factory=lambda: RateLimiter(30, 60.0))
    """Requests the checks refused, per client address (never spent by a valid request)."""
    machine_names: frozenset[str] = field(default_factory=_machine_names)

    def names_for(self, request: web.Request) -> set[str]:
        """The host names this request may address: see the module docstring."""
        names = set(self.machine_names)
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        local = sockname[0] if isinstance(sockname, tuple) else None
        if local:
            names.add(_bracket(local))
            if is_loopback(local):
                names |= LOOPBACK_NAMES
        if self.bind_host.lower() not in WILDCARD_HOSTS:
            names.add(_bracket(self.bind_host))
        return names

    def host_allowed(self, request: web.Request) -> bool:
        parsed = split_host(request.headers.get("Host", ""))
        if parsed is None:
            return False
        name, port = parsed
        if (f"{name}:{port}" if port is not None else name) in self.allow_hosts or name in self.allow_hosts:
            return True
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        local_port = sockname[1] if isinstance(sockname, tuple) else None
        return name in self.names_for(request) and port in (None, local_port)

    def origin_allowed(self, request: web.Request, origin: str) -> bool:
        """An ``Origin`` naming this request's own (allowed) ``Host``, or one the operator listed."""
        normal = normalize_origin(origin)
        if normal is None:
            return False
        if normal in self.allow_origins:
            return True
        scheme, authority = normal.split("://", 1)
        return authority == _host_authority(request.headers.get("Host", ""), scheme)

    def presented_token(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.query.get("token") or request.cookies.get(self.cookie)

    def token_ok(self, presented: str) -> bool:
        return self.token is not None and hmac.compare_digest(presented.encode(), self.token.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler) -> web.StreamResponse:
        """Host, then Origin, then the token; then the rate limit of requests that passed them (refused
        ones are limited in a bucket of their own); only then the route."""
        client = request.remote or "?"
        refusal = self.refusal(request)
        if refusal is not None:
            self._limit(self.refused, client)
            raise refusal
        self._limit(self.limiter, client)
        if self.token is None:
            return await handler(request)
        if "token" in request.query and request.path == "/":
            # the token leaves the address bar (and history, and Referer) for a cookie
            response = web.HTTPSeeOther("/")
        else:
            response = await handler(request)
        if request.cookies.get(self.cookie) != self.token:
            response.set_cookie(self.cookie, self.token, httponly=True, samesite="Strict", path="/",
                                secure=request.secure)  # fmt: skip
        if isinstance(response, web.HTTPException):
            raise response
        return response

    def refusal(self, request: web.Request) -> web.HTTPException | None:
        """Why ``request`` is refused (the response to raise), or None when its Host, Origin and token
        pass."""
        if not self.host_allowed(request):
            return web.HTTPForbidden(
                text="this server does not answer to that Host (see gstalk serve --allow-host)"
            )
        origin = request.headers.get("Origin")
        if origin is not None and not self.origin_allowed(request, origin):
            return web.HTTPForbidden(
                text="requests from that origin are refused (see gstalk serve --allow-origin)"
            )
        if self.token is None:
            return None
        presented = self.presented_token(request)
        if not presented:
            return web.HTTPUnauthorized(
                text="this gstalk server needs its token: open the link it printed at start-up"
            )
        if not self.token_ok(presented):
            return web.HTTPForbidden(text="wrong token")
        return None

    @staticmethod
    def _limit(limiter: RateLimiter, client: str) -> None:
        if not limiter.allow(client):
            raise web.HTTPTooManyRequests(
                text="too many requests from this address; wait a little",
                headers={"Retry-After": str(limiter.retry_after(client))},
            )


def access_for(config: ServeConfig) -> tuple[Access, bool]:
    """The :class:`Access` for ``config``, and whether its token was generated here (to print it).

    Raises GstalkError for a malformed ``--allow-host`` or ``--allow-origin``, or a bad operator token."""
    hosts = set()
    for entry in config.allow_host:
        parsed = split_host(entry)
        if parsed is None:
            raise GstalkError(
                f"--allow-host {entry!r} is not a host name", "give NAME or NAME:PORT, e.g. example.org"
            )
        hosts.add(parsed[0] if parsed[1] is None else f"{parsed[0]}:{parsed[1]}")
    origins = set()
    for entry in config.allow_origin:
        normal = normalize_origin(entry)
        if normal is None:
            raise GstalkError(
                f"--allow-origin {entry!r} is not an origin",
                "give SCHEME://HOST[:PORT], e.g. https://example.org",
            )
        origins.add(normal)
    token, generated = read_token(config), False
    if token is None and not is_loopback(config.host):
        token, generated = secrets.token_urlsafe(24), True
    access = Access(
        bind_host=config.host, allow_hosts=frozenset(hosts), allow_origins=frozenset(origins), token=token,
        cookie=f"gstalk_token_{config.port}", limiter=RateLimiter(config.rate_burst, config.rate_per_minute),
        refused=RateLimiter(config.rate_burst, config.rate_per_minute),
    )  # fmt: skip
    return access, generated
