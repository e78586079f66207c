"""SQL of drains: which live Panel processes a target names, their drain columns, and the agents' wake-up.

A drain is stored on the agent row (``drain_*`` columns, schema v9): every replica, and a restarted server,
answers the agent's syncs with it. Each change also queues a ``drain`` command, so the agent's long-poll
wakes and it syncs at once instead of at its next interval.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from session_monitor.errors import ProcessNotFound
from session_monitor.protocol import DRAIN, DrainTarget
from session_monitor.store.models import agents, commands, sessions
from session_monitor.store.repository import Actor, Store, write_audit

DRAIN_COLUMNS = ("drain_at", "drain_deadline", "drain_message", "drain_by")


def drain_info(row: Mapping[Any, Any]) -> dict[str, Any] | None:
    """The ``drain`` object of an agent row (``DrainInfo``), or ``None`` when it is not draining."""
    if row.get("drain_deadline") is None:
        return None
    return {
        "started_at": row["drain_at"],
        "deadline": row["drain_deadline"],
        "message": row["drain_message"] or "",
        "by": row["drain_by"] or "",
    }


def split_drain(row: Mapping[Any, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """An agent row without the drain columns, and its ``drain`` object."""
    return {k: v for k, v in row.items() if k not in DRAIN_COLUMNS}, drain_info(row)


def drain_of(conn: sa.Connection, agent_id: str) -> dict[str, Any] | None:
    """The agent's drain now (what its sync answer carries)."""
    a = agents.c
    row = conn.execute(sa.select(*(a[c] for c in DRAIN_COLUMNS)).where(a.agent_id == agent_id)).mappings().first()
    return None if row is None else drain_info(row)


def _matching(target: DrainTarget, live_since: datetime) -> sa.ColumnElement[bool]:
    """Live processes (not exited, seen since ``live_since``) the target names."""
    a, s = agents.c, sessions.c
    cond = [a.exited_at.is_(None), a.last_seen >= live_since]
    if target.app is not None:
        serving = sa.select(s.agent_id).where(s.app_name == target.app, s.ended_at.is_(None), s.agent_id.is_not(None))
        cond.append(a.agent_id.in_(serving))
    else:
        cond.append(a.host == target.host)
        if target.pid is not None:
            cond.append(a.pid == target.pid)
    return sa.and_(*cond)


def _wake(conn: sa.Connection, agent_ids: list[str], actor: Actor, now: datetime) -> None:
    values = [
        {"agent_id": agent, "session_id": "", "kind": DRAIN, "reason": None, "actor": actor.name, "created_at": now}
        for agent in agent_ids
    ]
    if values:
        conn.execute(commands.insert(), values)


class DrainStore:
    """Drains over the same database and clock as the session :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    async def set_drain(
        self, target: DrainTarget, *, deadline: datetime | None, message: str | None, actor: Actor
    ) -> list[dict[str, Any]]:
        """Drain (``deadline`` given) or undrain (``None``) the target's live processes; audit-logged.

        Returns the processes changed (``agent_id``, ``host``, ``pid``, ``drain``); raises
        :class:`ProcessNotFound` when the target names no live process (nothing is changed then).
        """
        now = self.store.clock()
        a = agents.c

        def op(conn: sa.Connection) -> list[dict[str, Any]]:
            where = _matching(target, now - self.store.stale_after)
            found = conn.execute(sa.select(a.agent_id, a.host, a.pid).where(where).order_by(a.host, a.pid)).all()
            if not found:
                raise ProcessNotFound(target.describe())
            values: dict[str, Any]
            if deadline is None:
                values = dict.fromkeys(DRAIN_COLUMNS)
            else:
                values = {
                    "drain_at": sa.func.coalesce(a.drain_at, now),
                    "drain_deadline": deadline,
                    "drain_message": message,
                    "drain_by": actor.name,
                }
            ids = [r.agent_id for r in found]
            conn.execute(agents.update().where(a.agent_id.in_(ids)).values(**values))
            _wake(conn, ids, actor, now)
            processes = [f"{r.host}:{r.pid}" for r in found]
            if deadline is None:
                write_audit(conn, now, actor, "undrain", target.describe(), processes=processes)
            else:
                detail = {"deadline": deadline.isoformat(), "message": message, "processes": processes}
                write_audit(conn, now, actor, "drain", target.describe(), **detail)
            return [
                {"agent_id": r.agent_id, "host": r.host, "pid": r.pid, "drain": drain_of(conn, r.agent_id)}
                for r in found
            ]

        return await self.db.write(op)

    async def apps_served(self, target: DrainTarget) -> frozenset[str] | None:
        """The apps of the live sessions on the target's live processes; ``None`` when it names no live process."""
        now = self.store.clock()
        a, s = agents.c, sessions.c

        def fn(conn: sa.Connection) -> frozenset[str] | None:
            live = _matching(target, now - self.store.stale_after)
            found = [r.agent_id for r in conn.execute(sa.select(a.agent_id).where(live))]
            if not found:
                return None
            query = sa.select(s.app_name).where(s.agent_id.in_(found), s.ended_at.is_(None)).distinct()
            return frozenset(str(r.app_name) for r in conn.execute(query))

        return await self.db.read(fn)
