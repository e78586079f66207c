"""Session reads of the :class:`~session_monitor.store.repository.Store`: listings, one session, counts, audit log.

Listings come two ways: as dicts rendered in Python (``list_sessions``, for callers that use the values) and
as JSON rendered by the database and streamed (``list_sessions_json``, what ``GET /sessions`` sends; see
:mod:`session_monitor.store.listing`). Reads run on their own pooled connections, never on the write path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from session_monitor.errors import SessionNotFound
from session_monitor.store.base import LIST_PARTITION_ROWS, SessionFilters, StoreBase
from session_monitor.store.listing import SessionsJSON, join_rows, json_query
from session_monitor.store.models import audit_log, sessions
from session_monitor.store.render import SESSION_FROM, effective_heartbeat
from session_monitor.store.rowcache import key_columns, packed_keys
from session_monitor.store.streams import TwoStep

LIST_CHUNK_ROWS = 10_000
"""Rows of a JSON listing fetched and sent at a time: 10,000 go in one answer (one read-thread hop),
a listing of 100,000 is streamed in ten chunks and never holds them all."""


class SessionReads(StoreBase):
    """The reads of sessions and of the audit log."""

    def _listing(
        self, filters: SessionFilters, *, live: bool, limit: int | None, offset: int, now: datetime, as_json: bool
    ) -> tuple[sa.Select[Any], sa.Select[Any] | None]:
        """The listing's query and, for a page, its count query (otherwise the rows are counted)."""
        cond = self.session_conditions(filters, live=live, now=now)
        order = [(sessions.c.start_time if live else sessions.c.ended_at, True), (sessions.c.session_id, False)]
        if as_json:
            query = (
                sa.select(*key_columns(self.db.dialect))
                .select_from(SESSION_FROM)
                .where(*cond)
                .order_by(*(col.desc() if desc else col for col, desc in order))
                .limit(limit)
                .offset(offset or None)
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
        """What :meth:`list_sessions` lists as JSON, streamed in chunks: each row's bytes from the row cache
        (:mod:`~session_monitor.store.rowcache`) with its time-dependent fields spliced in, or read whole."""
        now = self.clock()
        query, count = self._listing(filters, live=live, limit=limit, offset=offset, now=now, as_json=True)
        cache = self.row_cache
        render = TwoStep(cache.plan, lambda keys, fetched: cache.render(keys, fetched, now))
        query, unpack = packed_keys(query, self.db.dialect)
        return SessionsJSON(await self.db.stream(query, render, chunk_rows=LIST_CHUNK_ROWS, count=count, unpack=unpack))

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
