"""Who may talk to a ``mofme serve`` server: :class:`Guard`, an ASGI middleware run on every request.

* **Host allow-list** (DNS rebinding): the ``Host`` header must name the bound address, ``localhost``,
  ``127.0.0.1`` or ``[::1]`` (any port); a server bound to every address (``0.0.0.0``, ``::``) also
  accepts this machine's host names and any IP literal (a rebinding attack needs a domain name).
  Otherwise: 400.
* **Origin check** (cross-site requests): a state-changing request (any method but GET, HEAD, OPTIONS)
  that carries an ``Origin`` must come from ``http(s)://<allowed host>:<this server's port>``; no
  ``Origin`` (curl, scripts) is fine. Otherwise: 403.
* **Token** (only when bound beyond loopback): every request needs ``Authorization: Bearer <token>``,
  ``?token=<token>`` or the cookie a ``?token=`` request sets (``HttpOnly; SameSite=Strict``), so the
  page opened as ``http://host:port/?token=...`` works as is. Otherwise: 401.
* **Declared size**: a ``Content-Length`` above the upload limit is refused (413) before any byte is
  read; the upload route enforces the limit again while it streams (chunked bodies included).

Every refusal answers ``{"error": message}``.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders, QueryParams
from starlette.requests import cookie_parser
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["COOKIE", "LOOPBACK", "Guard", "allowed_hosts", "is_loopback", "new_token", "split_host"]

COOKIE = "mofme_serve_token"
LOOPBACK = "127.0.0.1"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def new_token() -> str:
    """A random access token (``secrets.token_urlsafe``)."""
    return secrets.token_urlsafe(18)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (no token needed)."""
    address = _ip(host.strip("[]"))
    return host.lower() in LOOPBACK_NAMES or (address is not None and address.is_loopback)


def allowed_hosts(bind: str) -> frozenset[str]:
    """Host names (lower case, no port) the ``Host`` header may carry for a server bound to ``bind``."""
    names = set(LOOPBACK_NAMES) | {bind.strip("[]").lower()}
    if bind in WILDCARDS:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names - {""})


def split_host(value: str) -> tuple[str, int | None]:
    """``"[::1]:7860"`` -> ``("::1", 7860)``; ``"localhost"`` -> ``("localhost", None)``; a malformed
    port gives ``("", None)`` (never allowed)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ("" if not rest else "x")
    elif value.count(":") == 1:
        name, port = value.split(":")
    else:
        name, port = value, ""
    if port and not port.isdigit():
        return "", None
    return name.rstrip("."), int(port) if port else None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class Guard:
    """The checks of this module around ``app``. ``bind``: the address the server listens on;
    ``token``: required from every request when given (:func:`create_app` gives one to any
    non-loopback server); ``max_upload`` + ``slack``: the largest ``Content-Length`` accepted."""

    def __init__(self, app: ASGIApp, *, bind: str, token: str | None, max_upload: int, slack: int) -> None:
        self.app = app
        self.bind = bind
        self.hosts = allowed_hosts(bind)
        self.token = token
        self.max_upload = max_upload
        self.slack = slack

    def host_allowed(self, name: str) -> bool:
        return name in self.hosts or (self.bind in WILDCARDS and _ip(name) is not None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        query_token = QueryParams(scope.get("query_string", b"")).get("token")
        if self.token and query_token and scope["method"] == "GET":
            send = self._setting_cookie(send)
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        name, port = split_host(headers.get("host", ""))
        if not self.host_allowed(name):
            return _error(400, "this server answers to localhost only (unexpected Host header)")
        if scope["method"] not in SAFE_METHODS and not self._origin_allowed(headers, scope, port):
            return _error(403, "cross-site request refused (the Origin is not this server)")
        if self.token and not self._authorized(scope, headers):
            message = (
                "this server needs its access token: open the address `mofme serve` printed "
                "(.../?token=...) or send 'Authorization: Bearer <token>'"
            )
            return _error(401, message, {"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_upload + self.slack:
            return _error(
                413,
                f"the file is larger than this server's upload limit of {self.max_upload:,} bytes "
                f"({int(length):,} bytes sent) (mofme serve --max-upload-mb)",
            )
        return None

    def _origin_allowed(self, headers: Headers, scope: Scope, port: int | None) -> bool:
        origin = headers.get("origin")
        if origin is None:
            return True  # not a browser's cross-origin request: curl, scripts, the test client
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not self.host_allowed((parts.hostname or "").lower()):
            return False
        try:
            origin_port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            return False
        return origin_port == (port or DEFAULT_PORTS.get(scope.get("scheme", "http"), 80))

    def _authorized(self, scope: Scope, headers: Headers) -> bool:
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        offered = [
            credentials.strip() if scheme.lower() == "bearer" else "",
            QueryParams(scope.get("query_string", b"")).get("token", ""),
            cookie_parser(headers.get("cookie", "")).get(COOKIE, ""),
        ]
        assert self.token is not None
        return any(secrets.compare_digest(t.encode(), self.token.encode()) for t in offered if t)

    def _setting_cookie(self, send: Send) -> Send:
        """``send`` adding the token cookie to the response (the page's later requests carry it)."""
        cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append("set-cookie", cookie)
            await send(message)

        return send_with_cookie
