"""The sessions changed since a cursor: what a live view needs each second instead of the whole list.

A row's ``changed_at`` moves with every change an operator can see except an agent's heartbeat (one
sync heartbeats all of an agent's sessions: stamping them would make every row "changed"). What a
heartbeat alone changes is covered otherwise: the agents' ``last_seen`` comes with every answer, rows
that crossed the stale threshold since the cursor are included, and a heartbeat that ends a ``stale``
state stamps the row. Prototype-style sessions (no agent) are included whenever they heartbeat.

The cursor handed back lies :data:`CURSOR_OVERLAP` before the read: a write stamped just before the
read may commit just after it (group commit, another replica, clocks a little apart), so rows of
the overlap come again next time. Callers merge by ``session_id``; an ended row means "remove".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from session_monitor.store.base import SessionFilters, StoreBase, placement_filters
from session_monitor.store.models import agents, sessions
from session_monitor.store.render import effective_heartbeat

CURSOR_OVERLAP = timedelta(seconds=2)
"""How far before the read the returned cursor lies (covers commit delay and replica clock skew)."""


@dataclass(frozen=True)
class Changes:
    sessions: list[dict[str, Any]]
    total: int
    """Live sessions matching the filters now, whatever changed."""
    cursor: datetime
    agent_last_seen: dict[str, datetime]


class ChangeReads(StoreBase):
    """The changed-since read of the :class:`~session_monitor.store.repository.Store`."""

    async def list_changes(self, since: datetime, filters: SessionFilters) -> Changes:
        """Sessions (live or ended) changed since ``since``, for the app/user/host of ``filters``."""
        return await _list_changes(self, since, filters)


async def _list_changes(store: StoreBase, since: datetime, filters: SessionFilters) -> Changes:
    now = store.clock()
    c = sessions.c
    stale_cutoff = now - store.stale_after
    heartbeat = effective_heartbeat()
    fixed = placement_filters(filters)
    changed = sa.or_(
        c.changed_at >= since,
        # Went stale since the cursor: no write marks that, time alone does.
        sa.and_(c.ended_at.is_(None), heartbeat < stale_cutoff, heartbeat >= since - store.stale_after),
        # Prototype-style sessions carry their own heartbeat.
        sa.and_(c.agent_id.is_(None), c.ended_at.is_(None), c.last_heartbeat >= since),
    )
    query = store.select_sessions().where(changed, *fixed).order_by(c.start_time.desc(), c.session_id)
    count = sa.select(sa.func.count()).select_from(sessions).where(c.ended_at.is_(None), *fixed)
    seen = sa.select(agents.c.agent_id, agents.c.last_seen).where(agents.c.exited_at.is_(None))
    async with store.db.read_engine.connect() as conn:
        rows = await store.render_stream(conn, query, now)
        total = int((await conn.execute(count)).scalar_one())
        last_seen = {str(agent_id): at for agent_id, at in (await conn.execute(seen)).all()}
    return Changes(rows, total, now - CURSOR_OVERLAP, last_seen)
