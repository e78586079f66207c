"""The session store: sessions (live and history) and the audit log; here their writes, the reads in its bases.

Every method takes plain values and returns plain dicts, bytes or numbers; routes never see ORM objects.
Writes run through the database's single write path; an admin action and its audit entry commit in the same
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from session_monitor.errors import SessionEnded, SessionNotFound
from session_monitor.store.base import SessionFilters, end_values, kill_values, placement_filters, utcnow
from session_monitor.store.changes import ChangeReads
from session_monitor.store.models import AuditRow, SessionRow, agents, audit_log, commands, sessions
from session_monitor.store.reads import SessionReads
from session_monitor.store.stats import TimelineReads


@dataclass(frozen=True)
class Actor:
    """Who asked for a change: a name for the audit log and where the request came from."""

    name: str
    remote_addr: str | None = None


SYSTEM = Actor("reaper")


def write_audit(conn: sa.Connection, now: datetime, actor: Actor, action: str, target: str, **detail: Any) -> None:
    conn.execute(
        audit_log.insert().values(
            at=now, actor=actor.name, action=action, target=target[:300], detail=detail, remote_addr=actor.remote_addr
        )
    )


@dataclass(frozen=True)
class KillAllOutcome:
    killed_count: int
    agent_ids: frozenset[str]


def _queue_kills(
    conn: sa.Connection, targets: list[tuple[str, str | None]], reason: str | None, actor: Actor, now: datetime
) -> None:
    """Queue a kill command for each session tracked by an agent (prototype clients learn it by heartbeat)."""
    values = [
        {"agent_id": agent, "session_id": sid, "kind": "kill", "reason": reason, "actor": actor.name, "created_at": now}
        for sid, agent in targets
        if agent
    ]
    if values:
        conn.execute(commands.insert(), values)


def kill_session_in(conn: sa.Connection, session_id: str, actor: Actor, reason: str | None, now: datetime) -> Any:
    """In a write transaction: the kill intent of a live session, its command and its audit entry.

    Returns the session's ``(session_id, agent_id, app_name)``, ``None`` if it is not live."""
    c = sessions.c
    row = conn.execute(
        sessions.update()
        .where(c.session_id == session_id, c.ended_at.is_(None))
        .values(**kill_values(actor.name, reason, now))
        .returning(c.session_id, c.agent_id, c.app_name)
    ).first()
    if row is not None:
        _queue_kills(conn, [(row.session_id, row.agent_id)], reason, actor, now)
        write_audit(conn, now, actor, "kill", session_id, app_name=row.app_name, reason=reason)
    return row


def kill_app_in(conn: sa.Connection, app_name: str, actor: Actor, reason: str | None, now: datetime) -> KillAllOutcome:
    """In a write transaction: kill intent for every live session of the app, their commands, one audit entry."""
    c = sessions.c
    rows = conn.execute(
        sessions.update()
        .where(c.app_name == app_name, c.ended_at.is_(None))
        .values(**kill_values(actor.name, reason, now))
        .returning(c.session_id, c.agent_id)
    ).all()
    _queue_kills(conn, [(r.session_id, r.agent_id) for r in rows], reason, actor, now)
    write_audit(conn, now, actor, "kill_all", app_name, killed_count=len(rows), reason=reason)
    return KillAllOutcome(len(rows), frozenset(r.agent_id for r in rows if r.agent_id))


def _raise_missing(conn: sa.Connection, session_id: str) -> None:
    row = conn.execute(sa.select(sessions.c.end_reason).where(sessions.c.session_id == session_id)).first()
    if row is None:
        raise SessionNotFound(session_id)
    raise SessionEnded(session_id, row.end_reason)


class Store(SessionReads, ChangeReads, TimelineReads):
    """Sessions and audit log over a :class:`Database`: their writes here, their reads in the base classes.

    ``clock`` is injectable for tests.
    """

    # -- session lifecycle (clients) ---------------------------------------------------------

    async def create_session(
        self,
        app_name: str,
        user_id: str | None,
        *,
        host: str | None = None,
        pid: int | None = None,
        session_id: str,
    ) -> str:
        now = self.clock()

        def op(conn: sa.Connection) -> str:
            conn.execute(
                sessions.insert().values(
                    session_id=session_id,
                    app_name=app_name,
                    user_id=user_id,
                    host=host,
                    pid=pid,
                    start_time=now,
                    last_heartbeat=now,
                    status="idle",
                    current_task=None,
                    kill_requested=False,
                    changed_at=now,
                )
            )
            return session_id

        return await self.db.write(op)

    async def heartbeat(self, session_id: str) -> bool:
        """Record a heartbeat; return whether a kill was requested."""
        now = self.clock()

        def op(conn: sa.Connection) -> bool:
            row = conn.execute(
                sessions.update()
                .where(sessions.c.session_id == session_id, sessions.c.ended_at.is_(None))
                .values(last_heartbeat=now, changed_at=self.heartbeat_changed(now))
                .returning(sessions.c.kill_requested)
            ).first()
            if row is None:
                _raise_missing(conn, session_id)
            return bool(row[0]) if row else False

        return await self.db.write(op)

    async def update_status(self, session_id: str, status: str, current_task: str | None) -> None:
        now = self.clock()
        c = sessions.c
        task_started = sa.case(
            (
                sa.and_(
                    sa.literal(status) == "running",
                    sa.or_(
                        c.status != "running",
                        c.current_task.is_distinct_from(current_task),
                        c.task_started_at.is_(None),
                    ),
                ),
                now,
            ),
            (sa.literal(status) == "running", c.task_started_at),
            else_=sa.null(),
        )

        def op(conn: sa.Connection) -> None:
            result = conn.execute(
                sessions.update()
                .where(c.session_id == session_id, c.ended_at.is_(None))
                .values(
                    status=status,
                    current_task=current_task,
                    last_heartbeat=now,
                    task_started_at=task_started,
                    changed_at=now,
                )
            )
            if result.rowcount == 0:
                _raise_missing(conn, session_id)

        await self.db.write(op)

    async def end_session(self, session_id: str, reason: str, actor: Actor) -> str:
        """End a live session; a session whose kill was requested ends as ``killed``. Returns the reason."""
        now = self.clock()
        c = sessions.c

        def op(conn: sa.Connection) -> str:
            row = conn.execute(
                sessions.update()
                .where(c.session_id == session_id, c.ended_at.is_(None))
                .values(**end_values(reason, actor.name, now))
                .returning(c.end_reason)
            ).first()
            if row is None:
                _raise_missing(conn, session_id)
            return str(row[0]) if row else reason

        return await self.db.write(op)

    # -- admin actions ------------------------------------------------------------------------

    async def request_kill(self, session_id: str, actor: Actor, reason: str | None) -> dict[str, Any]:
        """Store the kill intent (and queue a command for the session's agent); returns the session."""
        now = self.clock()

        def op(conn: sa.Connection) -> dict[str, Any]:
            if kill_session_in(conn, session_id, actor, reason, now) is None:
                _raise_missing(conn, session_id)
            shown = conn.execute(self.select_sessions().where(sessions.c.session_id == session_id)).one()
            return self.session_dict(shown, now)

        return await self.db.write(op)

    async def request_kill_app(self, app_name: str, actor: Actor, reason: str | None) -> KillAllOutcome:
        """Kill intent for every live session of the app; returns how many and which agents to wake."""
        now = self.clock()
        return await self.db.write(lambda conn: kill_app_in(conn, app_name, actor, reason, now))

    async def end_silent_sessions(self, older_than: timedelta, actor: Actor, *, audit: bool) -> int:
        """End every live session without a heartbeat for ``older_than`` as ``expired``."""
        now = self.clock()
        cutoff = now - older_than
        c = sessions.c

        def op(conn: sa.Connection) -> int:
            # An agent's sync is the heartbeat of all its live sessions (``agents.last_seen``).
            agent_alive = (
                sa.select(agents.c.agent_id)
                .where(agents.c.agent_id == c.agent_id, agents.c.exited_at.is_(None), agents.c.last_seen >= cutoff)
                .exists()
            )
            count = conn.execute(
                sessions.update()
                .where(c.ended_at.is_(None), c.last_heartbeat < cutoff, ~agent_alive)
                .values(ended_at=now, end_reason="expired", ended_by=actor.name, changed_at=now)
            ).rowcount
            if audit:
                write_audit(
                    conn,
                    now,
                    actor,
                    "cleanup",
                    "sessions",
                    deleted_count=count,
                    older_than_minutes=older_than.total_seconds() / 60,
                )
            return int(count)

        return await self.db.write(op)

    async def purge(self, *, history_before: datetime, audit_before: datetime) -> tuple[int, int]:
        """Delete history and audit entries past their retention; returns both counts."""

        def op(conn: sa.Connection) -> tuple[int, int]:
            ended = conn.execute(
                sessions.delete().where(sessions.c.ended_at.is_not(None), sessions.c.ended_at < history_before)
            ).rowcount
            audited = conn.execute(audit_log.delete().where(audit_log.c.at < audit_before)).rowcount
            return int(ended), int(audited)

        return await self.db.write(op)


__all__: Sequence[str] = [
    "SYSTEM",
    "Actor",
    "AuditRow",
    "KillAllOutcome",
    "SessionFilters",
    "SessionRow",
    "Store",
    "kill_app_in",
    "kill_session_in",
    "placement_filters",
    "utcnow",
    "write_audit",
]
