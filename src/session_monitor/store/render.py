"""Session rows as the API shows them, fast enough to list 10,000 sessions per request.

Listings select the timestamp columns without SQLAlchemy's per-value type
processing (it was most of the cost of a 10,000-row listing): PostgreSQL's
driver already returns aware UTC datetimes, and SQLite's stored UTC text is
parsed with an explicit offset, which is several times cheaper than attaching
a timezone afterwards.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from session_monitor.store.models import agents, sessions

SESSION_FROM = sessions.outerjoin(agents, agents.c.agent_id == sessions.c.agent_id)
"""What session listings select from: a session's agent holds the heartbeat of all its live sessions."""


def effective_heartbeat() -> sa.ColumnElement[Any]:
    """A live session's heartbeat: its agent's last sync when that is later than its own stamp.

    An agent's sync heartbeats all its sessions by stamping only the agent row, so a sync costs O(changed
    sessions), not O(sessions). Prototype-style sessions (no agent) and ended ones keep their own stamp.
    Selects from :data:`SESSION_FROM`.
    """
    s, a = sessions.c, agents.c
    fresher = sa.and_(s.ended_at.is_(None), a.exited_at.is_(None), a.last_seen > s.last_heartbeat)
    return sa.case((fresher, a.last_seen), else_=s.last_heartbeat)


FIELDS = (
    "session_id", "app_name", "user_id", "start_time", "last_heartbeat", "status", "current_task",
    "kill_requested", "host", "pid", "task_started_at", "kill_requested_at", "kill_requested_by",
    "kill_reason", "ended_at", "end_reason", "ended_by", "agent_id", "visibility", "last_interaction_at",
    "disconnected_at", "changed_at", "cost", "exempt",
)  # fmt: skip
"""The columns a session row is selected with, in this order."""

_TIMESTAMPS = frozenset(
    {
        "start_time", "last_heartbeat", "task_started_at", "kill_requested_at", "ended_at", "last_interaction_at",
        "disconnected_at", "changed_at",
    }
)  # fmt: skip


def session_columns(dialect: str) -> list[sa.ColumnElement[Any]]:
    """The columns of :data:`FIELDS`, timestamps as the driver returns them (no per-value processing).

    Select them from :data:`SESSION_FROM` (``last_heartbeat`` is :func:`effective_heartbeat`).
    """
    raw_type: sa.types.TypeEngine[Any] = sa.String() if dialect == "sqlite" else sa.DateTime(timezone=True)
    heartbeat = sa.type_coerce(effective_heartbeat(), raw_type).label("last_heartbeat")
    return [
        heartbeat
        if name == "last_heartbeat"
        else sa.type_coerce(sessions.c[name], raw_type).label(name)
        if name in _TIMESTAMPS
        else sessions.c[name]
        for name in FIELDS
    ]


def _sqlite_time(value: str | None, _parse: Callable[[str], datetime] = datetime.fromisoformat) -> datetime | None:
    # SQLAlchemy stores SQLite datetimes as naive UTC text ("2026-01-01 12:00:00.000000").
    return None if value is None else _parse(value + "+00:00")


def _as_is(value: datetime | None) -> datetime | None:
    return value


class SessionRenderer:
    """Turns a row selected with :func:`session_columns` into the API's dict, computed fields included."""

    def __init__(self, dialect: str, stale_after: timedelta) -> None:
        self.stale_after = stale_after
        self.time: Callable[[Any], datetime | None] = _sqlite_time if dialect == "sqlite" else _as_is
        self.columns = session_columns(dialect)
        self._pick = operator.itemgetter(*range(len(FIELDS)))

    def __call__(self, row: Any, now: datetime) -> dict[str, Any]:
        (sid, app_name, user_id, start_time, last_heartbeat, status, current_task, kill_requested, host, pid,
         task_started_at, kill_requested_at, kill_requested_by, kill_reason, ended_at, end_reason, ended_by,
         agent_id, visibility, last_interaction_at, disconnected_at, changed_at, cost, exempt,
         ) = self._pick(row)  # fmt: skip
        t = self.time
        start_time, last_heartbeat, ended_at = t(start_time), t(last_heartbeat), t(ended_at)
        task_started_at, kill_requested_at = t(task_started_at), t(kill_requested_at)
        last_interaction_at, disconnected_at, changed_at = t(last_interaction_at), t(disconnected_at), t(changed_at)
        assert start_time is not None and last_heartbeat is not None
        live = ended_at is None
        is_stale = live and now - last_heartbeat > self.stale_after
        if not live:
            state = "ended"
        elif is_stale:
            state = "stale"
        elif disconnected_at is not None:
            state = "disconnected"
        else:
            state = status
        running_since = task_started_at if live and status == "running" else None
        return {
            "session_id": sid,
            "app_name": app_name,
            "user_id": user_id,
            "start_time": start_time,
            "last_heartbeat": last_heartbeat,
            "duration_seconds": round(((ended_at or now) - start_time).total_seconds(), 3),
            "status": status,
            "current_task": current_task,
            "is_stale": is_stale,
            "kill_requested": bool(kill_requested),
            "state": state,
            "host": host,
            "pid": pid,
            "task_started_at": task_started_at,
            "task_seconds": round((now - running_since).total_seconds(), 3) if running_since else None,
            "kill_requested_at": kill_requested_at,
            "kill_requested_by": kill_requested_by,
            "kill_reason": kill_reason,
            "ended_at": ended_at,
            "end_reason": end_reason,
            "ended_by": ended_by,
            "agent_id": agent_id,
            "visibility": visibility,
            "last_interaction_at": last_interaction_at,
            "idle_seconds": (
                round(max(0.0, ((ended_at or now) - last_interaction_at).total_seconds()), 3)
                if last_interaction_at
                else None
            ),
            "disconnected_at": disconnected_at if live else None,
            "changed_at": changed_at,
            "cost": cost,
            "exempt": bool(exempt),
        }
