"""The dashboard's only way to the server: its REST API over httpx, with the admin token kept server-side.

Every call raises :class:`~session_monitor.errors.RequestFailed` with the server's own ``detail`` (or why it could
not be reached), so the dashboard can show it; nothing is swallowed here. ``ServerUnavailable`` (unreachable, timed
out, 5xx) and ``AuthError`` (401/403) are the two kinds of it that a caller may treat apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from session_monitor._version import __version__
from session_monitor.dashboard.roles import DashboardRole
from session_monitor.errors import AuthError, RequestFailed, ServerUnavailable

logger = logging.getLogger(__name__)

ACTOR_HEADER = "X-Session-Monitor-Actor"
"""Names the logged-in operator in the server's audit log (see :func:`encode_actor` for how)."""

_EXT_PREFIX = "UTF-8''"
_ATTR_CHARS = "!#$&+-.^_`|~"
"""RFC 8187 ``attr-char`` besides letters and digits: left as they are in an ext-value."""


def encode_actor(name: str) -> str:
    """``name`` as an :data:`ACTOR_HEADER` value: HTTP header values are ASCII, operators' names need not be.

    Printable ASCII goes out unchanged (what API users have always sent). Anything else (``José``, ``张伟``, a
    right-to-left name) goes out as an RFC 8187 ext-value, ``UTF-8''`` and the percent-encoded UTF-8 bytes,
    which the server decodes; so does a name that itself starts with ``UTF-8''``.
    """
    plain = name.isascii() and name.isprintable() and name[: len(_EXT_PREFIX)].upper() != _EXT_PREFIX
    return name if plain else _EXT_PREFIX + quote(name, safe=_ATTR_CHARS)


TIMEOUT_S = 10.0
"""Longest the dashboard waits for one API answer."""


@dataclass
class Fetched:
    """One answer and what it cost: seconds from request to parsed JSON, and body bytes."""

    data: Any
    seconds: float
    nbytes: int
    fetched_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    derived: dict[str, Any] = field(default_factory=dict)
    """What pages computed from ``data``, computed once and shared by every page of the process."""


try:  # orjson parses a 10,000-session list several times faster; it comes with the [server] extra
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - depends on the installed extras
    from json import loads as _loads  # type: ignore[assignment]


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:300]
    return response.text[:300]


class ApiClient:
    """Async client of the REST API. ``admin_token`` goes out as a bearer token and never leaves this process."""

    def __init__(
        self, api_url: str, admin_token: str | None = None, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.api_url = api_url.rstrip("/")
        headers = {"User-Agent": f"session-monitor-dashboard/{__version__}"}
        if admin_token:
            headers["Authorization"] = f"Bearer {admin_token}"
        self._http = httpx.AsyncClient(
            base_url=self.api_url, headers=headers, timeout=TIMEOUT_S, transport=transport, trust_env=False
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def request(
        self, method: str, path: str, *, actor: str | None = None, role: DashboardRole | None = None, **kwargs: Any
    ) -> Fetched:
        """One call; ``actor`` and ``role`` (the signed-in user's) go out as headers the server narrows to."""
        headers = {**({ACTOR_HEADER: encode_actor(actor)} if actor else {}), **(kwargs.pop("headers", None) or {})}
        if role is not None:
            headers.update(role.headers())
        started = time.perf_counter()
        try:
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TimeoutException:
            raise ServerUnavailable(
                f"the monitor server at {self.api_url} did not answer within {TIMEOUT_S:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise ServerUnavailable(f"cannot reach the monitor server at {self.api_url}: {exc}") from None
        if not response.is_success:
            status = response.status_code
            kind = AuthError if status in (401, 403) else ServerUnavailable if status >= 500 else RequestFailed
            raise kind(f"the server refused ({status}): {_detail(response)}", status)
        try:
            data = _loads(response.content)
        except ValueError:
            raise RequestFailed(
                f"the server answered {method} {path} with something that is not JSON", response.status_code
            ) from None
        return Fetched(data, time.perf_counter() - started, len(response.content))

    # -- reads ---------------------------------------------------------------------------------

    async def sessions(self, changed_since: str | None = None) -> Fetched:
        """Every live session, or with ``changed_since`` (a ``cursor`` of an earlier answer) only the changed ones."""
        params = {"changed_since": changed_since} if changed_since else None
        return await self.request("GET", "/sessions", params=params)

    async def agents(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/agents")).data["agents"])

    async def history(self, limit: int = 500) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/history", params={"limit": limit})).data["sessions"])

    async def audit(self, limit: int = 500) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/audit", params={"limit": limit})).data["entries"])

    async def policies(self) -> dict[str, Any]:
        return dict((await self.request("GET", "/policies")).data)

    async def timeline(self, window_s: float, step_s: float) -> dict[str, Any]:
        fetched = await self.request("GET", "/stats/timeline", params={"window_s": window_s, "step_s": step_s})
        return dict(fetched.data)

    # -- admin actions -------------------------------------------------------------------------

    async def kill(
        self,
        session_id: str,
        *,
        actor: str,
        reason: str | None = None,
        delay_s: float | None = None,
        role: DashboardRole | None = None,
    ) -> dict[str, Any]:
        """Kill now, or with notice (``delay_s``): the answer then has ``pending_kill_id`` and ``deadline``."""
        body = _kill_body(reason, delay_s)
        path = f"/sessions/{quote(session_id, safe='')}/kill"
        return dict((await self.request("POST", path, actor=actor, role=role, json=body)).data)

    async def kill_all(
        self,
        app_name: str,
        *,
        actor: str,
        reason: str | None = None,
        delay_s: float | None = None,
        role: DashboardRole | None = None,
    ) -> dict[str, Any]:
        """Kill every live session of the app now (``killed_count``), or with notice (``pending_kill_id``)."""
        path = f"/apps/{quote(app_name, safe='')}/kill-all"
        body = _kill_body(reason, delay_s)
        return dict((await self.request("POST", path, actor=actor, role=role, json=body)).data)

    # -- notices -------------------------------------------------------------------------------

    async def announcements(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/announcements")).data["announcements"])

    async def announce(self, body: dict[str, Any], *, actor: str) -> dict[str, Any]:
        return dict((await self.request("POST", "/announcements", actor=actor, json=body)).data)

    async def remove_announcement(self, announcement_id: int, *, actor: str) -> None:
        await self.request("DELETE", f"/announcements/{int(announcement_id)}", actor=actor)

    async def pending_kills(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/pending-kills")).data["pending_kills"])

    async def cancel_kill(self, pending_kill_id: int, *, actor: str) -> None:
        await self.request("DELETE", f"/pending-kills/{int(pending_kill_id)}", actor=actor)


def _kill_body(reason: str | None, delay_s: float | None) -> dict[str, Any] | None:
    body: dict[str, Any] = {}
    if reason:
        body["reason"] = reason
    if delay_s:
        body["delay_s"] = float(delay_s)
    return body or None


FULL_RELOAD_S = 60.0
"""Seconds between two full listings; in between the feed asks only for what changed."""


@dataclass
class SessionFeed:
    """The live session list shared by every dashboard page of a process: one fetch per interval, whatever the
    number of open pages, so ten operators do not cost the API ten times as much.

    After one full listing the feed asks only for the sessions changed since the server's last ``cursor`` and
    merges them by id (an ended one is removed). A full listing comes again every :data:`FULL_RELOAD_S`, after
    an error, and whenever the merged count disagrees with the server's ``total``, so a lost change heals.
    ``latest`` holds the merged list; its ``seconds`` and ``nbytes`` are those of the request that brought it.
    """

    client: ApiClient
    max_age_s: float = 1.0
    max_load: float = 0.2
    """At most this share of the time is spent waiting on the list: a slow answer spaces the next fetch."""
    full_reload_s: float = FULL_RELOAD_S
    latest: Fetched | None = None
    error: RequestFailed | None = None
    fetched_at: float = 0.0
    full_fetches: int = 0
    delta_fetches: int = 0
    _rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    _agent_seen: dict[str, str] = field(default_factory=dict)
    _cursor: str | None = None
    _full_at: float = 0.0
    _agreed: bool = True
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self) -> Fetched:
        """The newest list, fetched now if the last one is older than ``max_age_s``; raises the fetch's error."""
        async with self._lock:
            spent = self.latest.seconds if self.latest else 0.0
            if time.monotonic() - self.fetched_at >= max(self.max_age_s, spent / self.max_load - spent):
                try:
                    self.latest, self.error = await self._fetch(), None
                except RequestFailed as exc:
                    self.error, self._cursor = exc, None
                    logger.warning("cannot list sessions: %s", exc)
                self.fetched_at = time.monotonic()
            if self.error is not None:
                raise self.error
            assert self.latest is not None
            return self.latest

    def fetch_soon(self) -> None:
        """Make the next :meth:`get` fetch at once (after an admin action: its outcome is a change to fetch)."""
        self.fetched_at = 0.0

    async def _fetch(self) -> Fetched:
        now = time.monotonic()
        if self._cursor is None or now - self._full_at >= self.full_reload_s:
            answer = await self.client.sessions()
            self._rows = {str(s["session_id"]): s for s in answer.data["sessions"]}
            self._agent_seen = {}
            self._full_at = now
            self.full_fetches += 1
        else:
            answer = await self.client.sessions(changed_since=self._cursor)
            for s in answer.data["sessions"]:
                if s.get("state") == "ended":
                    self._rows.pop(str(s["session_id"]), None)
                else:
                    self._rows[str(s["session_id"])] = s
            self._agent_seen = dict(answer.data.get("agent_last_seen") or {})
            self.delta_fetches += 1
        # A count that disagrees twice in a row means a change was missed (a server with a new database, say):
        # start over. Once is normal: a session may start between the server's listing and its count.
        agrees = answer.data.get("total") == len(self._rows)
        self._cursor = answer.data.get("cursor") if agrees or self._agreed else None
        self._agreed = agrees
        data = {"sessions": list(self._rows.values()), "total": len(self._rows), "agent_last_seen": self._agent_seen}
        return Fetched(data, answer.seconds, answer.nbytes, answer.fetched_at)
