"""SQL of lost agents: a process that died without a word has its live sessions ended as ``process_lost``.

The server decides an agent is lost (``server.lost``); these statements only act while the shared
database still agrees: the agent's ``last_seen`` is the value read when its long-poll dropped, so a
sync that reached any replica in between (a failover, a blip) leaves it alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from session_monitor.store.base import end_values
from session_monitor.store.models import agents, sessions
from session_monitor.store.repository import Store

PROCESS_LOST = "process_lost"
ENDED_BY = "server"
"""``ended_by`` of sessions ended as ``process_lost``: the server's own judgement, not an operator's nor the agent's."""


@dataclass(frozen=True)
class LostAgent:
    agent_id: str
    host: str
    pid: int
    sessions_ended: int


async def agents_last_seen(store: Store, agent_ids: Iterable[str]) -> dict[str, datetime]:
    """``last_seen`` of these agents, for those known and not exited."""
    ids = list(agent_ids)

    def fn(conn: sa.Connection) -> dict[str, datetime]:
        a = agents.c
        rows = conn.execute(sa.select(a.agent_id, a.last_seen).where(a.agent_id.in_(ids), a.exited_at.is_(None))).all()
        return {agent_id: last_seen for agent_id, last_seen in rows}

    return await store.db.read(fn) if ids else {}


async def end_lost_agent(store: Store, agent_id: str, last_seen: datetime) -> LostAgent | None:
    """End the agent's live sessions as ``process_lost`` and mark it exited, if it has not synced since ``last_seen``.

    ``None`` when it has (or has exited, or is gone): then nothing is written.
    """
    now = store.clock()

    def op(conn: sa.Connection) -> LostAgent | None:
        a, c = agents.c, sessions.c
        # FOR UPDATE (PostgreSQL): a sync of this agent on another replica waits for this decision, then sees it.
        row = conn.execute(
            sa.select(a.host, a.pid)
            .where(a.agent_id == agent_id, a.last_seen == last_seen, a.exited_at.is_(None))
            .with_for_update()
        ).first()
        if row is None:
            return None
        ended = conn.execute(
            sessions.update()
            .where(c.agent_id == agent_id, c.ended_at.is_(None))
            .values(**end_values(PROCESS_LOST, ENDED_BY, now))
        ).rowcount
        conn.execute(agents.update().where(a.agent_id == agent_id).values(exited_at=now))
        return LostAgent(agent_id, row.host, row.pid, int(ended))

    return await store.db.write(op)


def lost_since(conn: sa.Connection, agent_id: str, since: datetime) -> bool:
    """Whether sessions of the agent were ended as ``process_lost`` since ``since`` (its previous sync).

    The agent is back: the server asks it for a full sync, which revives the sessions it still has.
    """
    c = sessions.c
    found = conn.execute(
        sa.select(c.session_id)
        .where(c.agent_id == agent_id, c.ended_at >= since, c.end_reason == PROCESS_LOST)
        .limit(1)
    ).first()
    return found is not None
