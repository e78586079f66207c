"""All SQL: sessions (live and history) and the audit log.

Every method takes plain values and returns plain dicts or numbers; routes
never see ORM objects. Writes run through the database's single write path;
an admin action and its audit entry commit in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from session_monitor.errors import SessionEnded, SessionNotFound
from session_monitor.store.engine import Database
from session_monitor.store.listing import SessionsJSON, join_rows, json_query
from session_monitor.store.models import AuditRow, SessionRow, agents, audit_log, commands, sessions
from session_monitor.store.render import SESSION_FROM, SessionRenderer, effective_heartbeat


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


@dataclass(frozen=True)
class Actor:
    """Who asked for a change: a name for the audit log and where the request came from."""

    name: str
    remote_addr: str | None = None


SYSTEM = Actor("reaper")

LIST_PARTITION_ROWS = 500
"""Rows a listing fetches and renders in Python between two turns of the event loop."""

LIST_CHUNK_ROWS = 20_000
"""Rows of a JSON listing fetched and sent at a time: 10,000 go in one answer with one read-thread hop,
a listing of 100,000 is streamed and never holds them all."""


def _audit(conn: sa.Connection, now: datetime, actor: Actor, action: str, target: str, **detail: Any) -> None:
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


def _raise_missing(conn: sa.Connection, session_id: str) -> None:
    row = conn.execute(sa.select(sessions.c.end_reason).where(sessions.c.session_id == session_id)).first()
    if row is None:
        raise SessionNotFound(session_id)
    raise SessionEnded(session_id, row.end_reason)


class Store:
    """Sessions and audit log over a :class:`Database`. ``clock`` is injectable for tests."""

    def __init__(self, db: Database, *, stale_after_s: float, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.stale_after = timedelta(seconds=stale_after_s)
        self.clock = clock
        self._render = SessionRenderer(db.dialect, self.stale_after)
        self.columns = self._render.columns

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
                .values(
                    ended_at=now,
                    end_reason=sa.case((c.kill_requested, "killed"), else_=reason),
                    ended_by=actor.name,
                    changed_at=now,
                )
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
        c = sessions.c

        def op(conn: sa.Connection) -> dict[str, Any]:
            row = conn.execute(
                sessions.update()
                .where(c.session_id == session_id, c.ended_at.is_(None))
                .values(
                    kill_requested=True,
                    kill_requested_at=sa.func.coalesce(c.kill_requested_at, now),
                    kill_requested_by=actor.name,
                    kill_reason=reason,
                    changed_at=now,
                )
                .returning(c.session_id, c.agent_id, c.app_name)
            ).first()
            if row is None:
                _raise_missing(conn, session_id)
            assert row is not None
            _queue_kills(conn, [(row.session_id, row.agent_id)], reason, actor, now)
            _audit(conn, now, actor, "kill", session_id, app_name=row.app_name, reason=reason)
            shown = conn.execute(self.select_sessions().where(c.session_id == session_id)).one()
            return self.session_dict(shown, now)

        return await self.db.write(op)

    async def request_kill_app(self, app_name: str, actor: Actor, reason: str | None) -> KillAllOutcome:
        """Kill intent for every live session of the app; returns how many and which agents to wake."""
        now = self.clock()
        c = sessions.c

        def op(conn: sa.Connection) -> KillAllOutcome:
            rows = conn.execute(
                sessions.update()
                .where(c.app_name == app_name, c.ended_at.is_(None))
                .values(
                    kill_requested=True,
                    kill_requested_at=sa.func.coalesce(c.kill_requested_at, now),
                    kill_requested_by=actor.name,
                    kill_reason=reason,
                    changed_at=now,
                )
                .returning(c.session_id, c.agent_id)
            ).all()
            _queue_kills(conn, [(r.session_id, r.agent_id) for r in rows], reason, actor, now)
            _audit(conn, now, actor, "kill_all", app_name, killed_count=len(rows), reason=reason)
            return KillAllOutcome(len(rows), frozenset(r.agent_id for r in rows if r.agent_id))

        return await self.db.write(op)

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
                _audit(
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

    # -- reads ----------------------------------------------------------------------------------

    def _where(self, f: SessionFilters, *, live: bool, now: datetime) -> list[sa.ColumnElement[bool]]:
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

    def _listing(
        self, filters: SessionFilters, *, live: bool, limit: int | None, offset: int, now: datetime, as_json: bool
    ) -> tuple[sa.Select[Any], sa.Select[Any] | None]:
        """The listing's query and, for a page, its count query (otherwise the rows are counted)."""
        cond = self._where(filters, live=live, now=now)
        order = [(sessions.c.start_time if live else sessions.c.ended_at, True), (sessions.c.session_id, False)]
        if as_json:
            query = json_query(
                self.db.dialect, now, self.stale_after, where=cond, order=order, limit=limit, offset=offset
            )
        else:
            query = (
                self.select_sessions()
                .where(*cond)
                .order_by(*(col.desc() if desc else col for col, desc in order))
                .limit(limit)
                .offset(offset or None)
            )
        if limit is None and not offset:
            return query, None
        return query, sa.select(sa.func.count()).select_from(SESSION_FROM).where(*cond)

    async def list_sessions(
        self, filters: SessionFilters, *, live: bool = True, limit: int | None = None, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        """Sessions matching ``filters`` (live, or ended when ``live`` is false), newest first, and their total."""
        now = self.clock()
        query, count = self._listing(filters, live=live, limit=limit, offset=offset, now=now, as_json=False)

        def render(rows: Sequence[Any]) -> list[dict[str, Any]]:
            return [self.session_dict(r, now) for r in rows]

        stream = await self.db.stream(query, render, chunk_rows=LIST_PARTITION_ROWS, count=count)
        rendered = list(stream.first)
        async for part in stream.rest():
            rendered.extend(part)
        return rendered, len(rendered) if stream.total is None else stream.total

    async def list_sessions_json(
        self, filters: SessionFilters, *, live: bool = True, limit: int | None = None, offset: int = 0
    ) -> SessionsJSON:
        """What :meth:`list_sessions` lists, rendered by the database as JSON and streamed in chunks."""
        now = self.clock()
        query, count = self._listing(filters, live=live, limit=limit, offset=offset, now=now, as_json=True)
        return SessionsJSON(await self.db.stream(query, join_rows, chunk_rows=LIST_CHUNK_ROWS, count=count))

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

    async def get_session(self, session_id: str) -> dict[str, Any]:
        now = self.clock()

        def fn(conn: sa.Connection) -> dict[str, Any]:
            row = conn.execute(self.select_sessions().where(sessions.c.session_id == session_id)).first()
            if row is None:
                raise SessionNotFound(session_id)
            return self.session_dict(row, now)

        return await self.db.read(fn)

    async def get_session_json(self, session_id: str) -> bytes:
        """:meth:`get_session` rendered by the database as JSON."""
        query = json_query(self.db.dialect, self.clock(), self.stale_after, where=[sessions.c.session_id == session_id])

        def fn(conn: sa.Connection) -> bytes:
            body, n = join_rows(conn.execute(query).all())
            if not n:
                raise SessionNotFound(session_id)
            return body

        return await self.db.read(fn)

    async def count_live(self) -> list[tuple[str, str, int]]:
        """``(app_name, state, count)`` of live sessions, for metrics."""
        now = self.clock()
        c = sessions.c
        stale = effective_heartbeat() < now - self.stale_after
        state = sa.case((stale, "stale"), (c.disconnected_at.is_not(None), "disconnected"), else_=c.status)
        query = (
            sa.select(c.app_name, state, sa.func.count())
            .select_from(SESSION_FROM)
            .where(c.ended_at.is_(None))
            .group_by(c.app_name, state)
        )

        def fn(conn: sa.Connection) -> list[tuple[str, str, int]]:
            return [(str(a), str(s), int(n)) for a, s, n in conn.execute(query).all()]

        return await self.db.read(fn)

    async def list_audit(
        self, *, limit: int, offset: int = 0, action: str | None = None, actor: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        cond: list[sa.ColumnElement[bool]] = []
        if action is not None:
            cond.append(audit_log.c.action == action)
        if actor is not None:
            cond.append(audit_log.c.actor == actor)
        query = sa.select(audit_log).where(*cond).order_by(audit_log.c.id.desc()).limit(limit).offset(offset)
        count = sa.select(sa.func.count()).select_from(audit_log).where(*cond)

        def fn(conn: sa.Connection) -> tuple[list[dict[str, Any]], int]:
            rows = conn.execute(query).mappings().all()
            return [dict(r) for r in rows], int(conn.execute(count).scalar_one())

        return await self.db.read(fn)

    async def ping(self) -> None:
        await self.db.read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar_one())


__all__: Sequence[str] = ["SYSTEM", "Actor", "AuditRow", "SessionFilters", "SessionRow", "Store", "utcnow"]
