"""What every part of the session store shares: the database, the clock, the stale threshold, the filters.

:class:`StoreBase` is the base of the :class:`~session_monitor.store.repository.Store` and of the session
reads it is made of (``reads``, ``changes``, ``stats``); the agents and commands have their own class over
the same base (:class:`~session_monitor.store.agents.AgentStore`). Also here: the value blocks that mark a
session killed or ended, shared by the admin actions, the reaper and agent syncs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from session_monitor.store.engine import Database
from session_monitor.store.models import sessions
from session_monitor.store.render import SESSION_FROM, SessionRenderer, effective_heartbeat
from session_monitor.store.rowcache import RowCache

LIST_PARTITION_ROWS = 500
"""Rows a listing fetches and renders in Python between two turns of the event loop."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SessionFilters:
    """Filters of the session listings; ``None`` means any."""

    app: str | None = None
    state: str | None = None
    user: str | None = None
    host: str | None = None
    search: str | None = None
    end_reason: str | None = None


def placement_filters(f: SessionFilters) -> list[sa.ColumnElement[bool]]:
    """The filters on what never changes for a session: app, user, host."""
    c = sessions.c
    cond: list[sa.ColumnElement[bool]] = []
    if f.app is not None:
        cond.append(c.app_name == f.app)
    if f.user is not None:
        cond.append(c.user_id == f.user)
    if f.host is not None:
        cond.append(c.host == f.host)
    return cond


def kill_values(actor: str, reason: str | None, now: datetime) -> dict[str, Any]:
    """``UPDATE sessions`` values storing a kill intent (the first request's time is kept)."""
    c = sessions.c
    return {
        "kill_requested": True,
        "kill_requested_at": sa.func.coalesce(c.kill_requested_at, now),
        "kill_requested_by": actor,
        "kill_reason": reason,
        "changed_at": now,
    }


def end_values(reason: Any, by: str, now: datetime, *, at: Any = None) -> dict[str, Any]:
    """``UPDATE sessions`` values ending a session for ``reason`` (``killed`` when a kill was requested).

    ``at``: when it ended, if not ``now`` (a value or a bound parameter, like ``reason``).
    """
    c = sessions.c
    return {
        "ended_at": now if at is None else at,
        "end_reason": sa.case((c.kill_requested, "killed"), else_=reason),
        "ended_by": by,
        "changed_at": now,
    }


class StoreBase:
    """The database, clock and stale threshold of a store, and how a session row is rendered."""

    def __init__(self, db: Database, *, stale_after_s: float, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.stale_after = timedelta(seconds=stale_after_s)
        self.clock = clock
        self._render = SessionRenderer(db.dialect, self.stale_after)
        self.columns = self._render.columns
        self.row_cache = RowCache(self._render, db.dialect, self.select_sessions)
        """The JSON of session rows as ``GET /sessions`` lists them, for this store instance."""

    # -- rendering --------------------------------------------------------------------------

    def heartbeat_changed(self, now: datetime) -> sa.ColumnElement[Any]:
        """``changed_at`` for a heartbeat: it moves only when the heartbeat ends a ``stale`` state."""
        c = sessions.c
        return sa.case((c.last_heartbeat < now - self.stale_after, now), else_=c.changed_at)

    def select_sessions(self) -> sa.Select[Any]:
        """``SELECT`` of the rendered columns, from sessions joined to their agents."""
        return sa.select(*self.columns).select_from(SESSION_FROM)

    def session_dict(self, row: Any, now: datetime) -> dict[str, Any]:
        """A row selected with ``self.columns`` as the API shows it, with the computed fields."""
        return self._render(row, now)

    async def render_stream(self, conn: AsyncConnection, query: sa.Select[Any], now: datetime) -> list[dict[str, Any]]:
        """The rendered rows of ``query`` (selected with ``self.columns``).

        Streamed in partitions: fetching and rendering 10,000 rows in one go held the event loop,
        and every heartbeat waiting on it, for the whole listing. Between partitions others run.
        """
        rendered: list[dict[str, Any]] = []
        result = await conn.stream(query)
        async for part in result.partitions(LIST_PARTITION_ROWS):
            rendered.extend(self.session_dict(r, now) for r in part)
        return rendered

    def session_conditions(self, f: SessionFilters, *, live: bool, now: datetime) -> list[sa.ColumnElement[bool]]:
        """The ``WHERE`` of a listing: live or ended sessions matching ``f`` at ``now``."""
        c = sessions.c
        cond = [c.ended_at.is_(None) if live else c.ended_at.is_not(None), *placement_filters(f)]
        if f.end_reason is not None:
            cond.append(c.end_reason == f.end_reason)
        if f.state is not None and live:
            cutoff = now - self.stale_after
            heartbeat = effective_heartbeat()
            if f.state == "stale":
                cond.append(heartbeat < cutoff)
            elif f.state == "disconnected":
                cond.extend([c.disconnected_at.is_not(None), heartbeat >= cutoff])
            else:
                cond.extend([c.status == f.state, c.disconnected_at.is_(None), heartbeat >= cutoff])
        if f.search:
            cond.append(
                sa.or_(
                    *(
                        col.icontains(f.search, autoescape=True)
                        for col in (c.session_id, c.app_name, c.user_id, c.current_task, c.host)
                    )
                )
            )
        return cond
