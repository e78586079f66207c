"""Request-level protection: body size limit, CSRF and DNS-rebinding guards, and bearer-token checks.

CSRF: the prototype's body-less POSTs are "simple" requests a foreign page can
fire with a plain form or ``fetch``. Browsers label every request with
``Sec-Fetch-Site`` and send ``Origin`` on cross-origin POSTs; programmatic
clients (httpx, the prototype's client) send neither. So a state-changing
request that a browser marks as cross-site, or whose ``Origin`` is not this
server's, is refused (the approach of Go's ``http.CrossOriginProtection``).
Tokens travel only in the ``Authorization`` header, which a cross-site page
cannot set without a CORS preflight we never approve.

DNS rebinding: whatever tokens are set, the server only answers ``Host`` headers
naming loopback, its bind address, ``allowed_hosts`` or an IP literal: a page on
an attacker's domain resolved to it gets nothing (not even a 401 to probe with).
An IP literal cannot be rebound: a page that reaches the server by address has
that address as its origin, which the attacker does not control. Only an explicit
``allowed_hosts=["*"]`` turns the check off.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from session_monitor.protocol.config import MAX_CONFIG_VALUE_BYTES

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CONFIG_BODY_LIMIT = 2 * MAX_CONFIG_VALUE_BYTES
"""Body limit of a shared-config ``PUT``: room for an indented value whose compact form is within the limit."""


async def send_error(send: Send, status: int, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header.split("]", 1)[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def host_allowed(host_header: str, allowlist: frozenset[str] | None) -> bool:
    """Whether a request with this ``Host`` header is served (``allowlist`` ``None``: any)."""
    if allowlist is None:
        return True
    name = _host_name(host_header).lower()
    if name in allowlist:
        return True
    try:
        ipaddress.ip_address(name.strip("[]") if name.startswith("[") else name)
    except ValueError:
        return False
    return True


@dataclass
class GuardMiddleware:
    """Body limit (413), loopback Host check, and cross-site refusal, before any route runs."""

    app: ASGIApp
    max_body_bytes: int
    max_sync_body_bytes: int
    trusted_origins: frozenset[str]
    host_allowlist: frozenset[str] | None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope.get("path", "")
        limit = self._limit(method, path)
        refusal = self._refusal(scope, method) or _declared_length_problem(scope, limit)
        if refusal is not None:
            await send_error(send, *refusal)
            return
        if method not in STATE_CHANGING:
            await self.app(scope, receive, send)
            return
        # Read the body up front (it is small) so a chunked body over the limit is refused before any work.
        body = await _read_body(receive, limit)
        if body is None:
            return  # the client left
        if isinstance(body, tuple):
            await send_error(send, *body)
            return
        data: bytes = body
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": data, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _limit(self, method: str, path: str) -> int:
        """The body limit of a request: an agent's full sync carries every session of its process, a config
        value is measured by its route (compact JSON)."""
        sync = path.startswith("/agents/") and path.endswith("/sync")
        limit = self.max_sync_body_bytes if sync else self.max_body_bytes
        if method == "PUT" and path.startswith("/config/"):
            limit = max(limit, CONFIG_BODY_LIMIT)
        return limit

    def _refusal(self, scope: Scope, method: str) -> tuple[int, str] | None:
        """A host outside the allowlist (421) or a cross-site state change (403)."""
        host = _header(scope, b"host") or ""
        if not host_allowed(host, self.host_allowlist):
            return (
                421,
                f"host {host[:100]!r} is not served (DNS-rebinding guard): add it to SESSION_MONITOR_ALLOWED_HOSTS",
            )
        if method in STATE_CHANGING:
            problem = self._cross_site(scope, host)
            if problem:
                return 403, problem
        return None

    def _cross_site(self, scope: Scope, host: str) -> str | None:
        origin = _header(scope, b"origin")
        if origin is not None and origin in self.trusted_origins:
            return None
        fetch_site = _header(scope, b"sec-fetch-site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return f"cross-site request refused (Sec-Fetch-Site: {fetch_site}); use the API from a client, not a page"
        if origin is not None and origin != "null":
            try:
                origin_netloc = urlsplit(origin).netloc
            except ValueError:  # e.g. "http://[" (an unclosed IPv6 bracket) used to raise a 500
                return "request with a malformed Origin header refused"
            if origin_netloc.lower() != host.lower():
                return f"cross-origin request from {origin!r} refused; add it to trusted_origins if intended"
        elif origin == "null":
            return "request with Origin: null refused"
        return None


def _declared_length_problem(scope: Scope, limit: int) -> tuple[int, str] | None:
    """A ``Content-Length`` that is not a number (400) or over ``limit`` (413)."""
    length = _header(scope, b"content-length")
    if length is None:
        return None
    # isdigit() alone admits non-ASCII digits ("\xb2") that int() refuses, and a huge run of digits exceeds
    # int()'s limit: both raised a 500.
    if not (length.isascii() and length.isdigit()):
        return 400, "invalid Content-Length header"
    declared = length.lstrip("0") or "0"
    if len(declared) > 18 or int(declared) > limit:
        shown = declared if len(declared) <= 18 else "more than 10**18"
        return 413, f"request body of {shown} bytes exceeds the limit of {limit} bytes"
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | tuple[int, str] | None:
    """The whole request body, a 413 once it exceeds ``limit``, or ``None`` if the client left."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return 413, f"request body exceeds the limit of {limit} bytes"
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def client_addr(scope: MutableMapping[str, Any]) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None
