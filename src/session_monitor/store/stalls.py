"""SQL of loop health and stalls: the agents' loop-health columns and the ``stalls`` table.

A sync writes the loop health of its interval on the agent row (in the sync's own transaction, see
:func:`loop_facts`). Stalls are written by :meth:`StallStore.record` in a transaction of their own, after
the sync: a stall that cannot be stored never fails the sync. Bounds, so stalls can never inflate the
database: an agent may add at most ``max_per_minute`` new stalls a minute (beyond, they are refused and
the sync answer says so); at most ``max_per_agent`` are kept per agent and ``max_total`` in all, the oldest
dropped first. Every stall refused or dropped is counted on its agent's row and reported by ``GET /stalls``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from session_monitor.protocol import AgentInfo, LoopHealth, Stall
from session_monitor.store.models import agents, sessions, stalls
from session_monitor.store.repository import Store

MAX_STALLS_PER_AGENT = 1000
"""Stalls kept per agent (``SESSION_MONITOR_MAX_STALLS_PER_AGENT``); the oldest are dropped beyond."""

MAX_STALLS_TOTAL = 100_000
"""Stalls kept in all (``SESSION_MONITOR_MAX_STALLS_TOTAL``); the oldest are dropped beyond."""

MAX_STALLS_PER_MINUTE = 120
"""New stalls an agent may send per minute (``SESSION_MONITOR_MAX_STALLS_PER_MINUTE``): a loop stalled back
to back at the default 0.5 s threshold is that many; beyond, they are refused."""

RATE_WINDOW = timedelta(minutes=1)

LOOP_COLUMNS = (
    "loop_at", "loop_interval_s", "loop_probes", "loop_lag_p50_ms", "loop_lag_p99_ms", "loop_lag_max_ms",
    "loop_busy", "pool_size", "pool_queue", "pool_busy", "stalls_dropped_agent", "stalls_dropped_server",
    "stall_window_at", "stall_window_count",
)  # fmt: skip
"""The agents' columns this module owns (v7)."""


def loop_facts(loop: LoopHealth | None, now: datetime) -> dict[str, Any]:
    """The agent-row columns of a sync's loop health (none without: an older agent keeps what it had)."""
    if loop is None:
        return {}
    return {
        "loop_at": now,
        "loop_interval_s": loop.interval_s,
        "loop_probes": loop.probes,
        "loop_lag_p50_ms": loop.lag_p50_ms,
        "loop_lag_p99_ms": loop.lag_p99_ms,
        "loop_lag_max_ms": loop.lag_max_ms,
        "loop_busy": loop.busy,
        "pool_size": loop.pool_size,
        "pool_queue": loop.pool_queue,
        "pool_busy": loop.pool_busy,
        "stalls_dropped_agent": loop.stalls_dropped,
    }


def split_loop(row: Mapping[Any, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """An agent row without this module's columns, and its ``loop`` object for ``GET /agents`` (or ``None``)."""
    rest = {k: v for k, v in row.items() if k not in LOOP_COLUMNS}
    if row.get("loop_at") is None:
        return rest, None
    return rest, {
        "measured_at": row["loop_at"],
        "interval_s": row["loop_interval_s"],
        "probes": row["loop_probes"],
        "lag_p50_ms": row["loop_lag_p50_ms"],
        "lag_p99_ms": row["loop_lag_p99_ms"],
        "lag_max_ms": row["loop_lag_max_ms"],
        "busy": row["loop_busy"],
        "pool_size": row["pool_size"],
        "pool_queue": row["pool_queue"],
        "pool_busy": row["pool_busy"],
        "stalls_dropped": int(row["stalls_dropped_agent"] or 0) + int(row["stalls_dropped_server"] or 0),
    }


@dataclass(frozen=True)
class StallFilters:
    app: str | None = None
    session: str | None = None
    host: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class StallOutcome:
    """What :meth:`StallStore.record` did: stalls new to the server (by host and pid), refused, and dropped."""

    new: int = 0
    refused: int = 0
    dropped: int = 0
    error: str | None = None
    new_by_process: dict[tuple[str, int], int] = field(default_factory=dict)


class StallStore:
    """Stalls over the same database and clock as the session :class:`Store`."""

    def __init__(
        self,
        store: Store,
        *,
        max_per_agent: int = MAX_STALLS_PER_AGENT,
        max_total: int = MAX_STALLS_TOTAL,
        max_per_minute: int = MAX_STALLS_PER_MINUTE,
    ) -> None:
        self.store = store
        self.db = store.db
        self.max_per_agent = max_per_agent
        self.max_total = max_total
        self.max_per_minute = max_per_minute

    async def record(self, agent_id: str, info: AgentInfo, reported: Sequence[Stall]) -> StallOutcome:
        """Store new stalls and update the ones already known (an open stall becoming final)."""
        if not reported:
            return StallOutcome()
        now = self.store.clock()
        s = stalls.c

        def op(conn: sa.Connection) -> StallOutcome:
            by_seq = {stall.seq: stall for stall in reported}
            known = set(conn.execute(sa.select(s.seq).where(s.agent_id == agent_id, s.seq.in_(list(by_seq)))).scalars())
            for stall in (by_seq[seq] for seq in known):
                values: dict[str, Any] = {"duration_s": stall.duration_s, "final": stall.final}
                if stall.stack:
                    values["stack"] = [f.model_dump() for f in stall.stack]
                conn.execute(stalls.update().where(s.agent_id == agent_id, s.seq == stall.seq).values(**values))
            fresh = [stall for seq, stall in by_seq.items() if seq not in known]
            window = conn.execute(
                sa.select(agents.c.stall_window_at, agents.c.stall_window_count).where(agents.c.agent_id == agent_id)
            ).first()
            window_at, count = (window.stall_window_at, int(window.stall_window_count or 0)) if window else (None, 0)
            if window_at is None or now - window_at >= RATE_WINDOW or now < window_at:
                window_at, count = now, 0
            allowed = max(0, self.max_per_minute - count)
            accepted, refused = fresh[:allowed], len(fresh) - min(len(fresh), allowed)
            if accepted:
                apps = self._apps(conn, [st.session_id for st in accepted if st.session_id])
                conn.execute(
                    stalls.insert(),
                    [
                        {
                            "agent_id": agent_id,
                            "seq": st.seq,
                            "host": info.host,
                            "pid": info.pid,
                            "app_name": apps.get(st.session_id) if st.session_id else None,
                            "session_id": st.session_id,
                            "function": st.function,
                            "started_at": min(st.started_at, now),
                            "duration_s": st.duration_s,
                            "final": st.final,
                            "stack": [f.model_dump() for f in st.stack],
                            "received_at": now,
                        }
                        for st in accepted
                    ],
                )
            dropped = self._enforce_caps(conn, agent_id) if accepted else Counter[str]()
            conn.execute(
                agents.update()
                .where(agents.c.agent_id == agent_id)
                .values(
                    stall_window_at=window_at,
                    stall_window_count=count + len(accepted),
                    stalls_dropped_server=sa.func.coalesce(agents.c.stalls_dropped_server, 0)
                    + refused
                    + dropped.pop(agent_id, 0),
                )
            )
            for other, n in dropped.items():
                conn.execute(
                    agents.update()
                    .where(agents.c.agent_id == other)
                    .values(stalls_dropped_server=sa.func.coalesce(agents.c.stalls_dropped_server, 0) + n)
                )
            error = None
            if refused:
                error = (
                    f"{refused} stall(s) refused: this agent sent more than {self.max_per_minute} new stalls "
                    "in a minute (SESSION_MONITOR_MAX_STALLS_PER_MINUTE); the rest of the sync was applied"
                )
            process = (info.host, info.pid)
            return StallOutcome(
                new=len(accepted),
                refused=refused,
                dropped=sum(dropped.values()),
                error=error,
                new_by_process={process: len(accepted)} if accepted else {},
            )

        return await self.db.write(op)

    @staticmethod
    def _apps(conn: sa.Connection, session_ids: list[str]) -> dict[str, str]:
        if not session_ids:
            return {}
        c = sessions.c
        rows = conn.execute(sa.select(c.session_id, c.app_name).where(c.session_id.in_(session_ids))).all()
        return {str(sid): str(app) for sid, app in rows}

    def _enforce_caps(self, conn: sa.Connection, agent_id: str) -> Counter[str]:
        """Drop the oldest stalls beyond the per-agent and the total cap; returns how many per agent."""
        s = stalls.c
        dropped: Counter[str] = Counter()
        mine = int(conn.execute(sa.select(sa.func.count()).where(s.agent_id == agent_id)).scalar_one())
        if mine > self.max_per_agent:
            excess = mine - self.max_per_agent
            last = conn.execute(
                sa.select(s.id).where(s.agent_id == agent_id).order_by(s.id).offset(excess - 1).limit(1)
            ).scalar_one()
            # Ids only grow: the agent's rows up to that id are exactly its oldest ``excess``.
            conn.execute(stalls.delete().where(s.agent_id == agent_id, s.id <= last))
            dropped[agent_id] += excess
        total = int(conn.execute(sa.select(sa.func.count()).select_from(stalls)).scalar_one())
        if total > self.max_total:
            victims = conn.execute(sa.select(s.id, s.agent_id).order_by(s.id).limit(total - self.max_total)).all()
            conn.execute(stalls.delete().where(s.id <= victims[-1].id))
            dropped.update(str(agent) for _, agent in victims)
        return dropped

    async def list_stalls(
        self, filters: StallFilters, *, limit: int, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int, int]:
        """Stalls matching ``filters``, newest first; their total; and the stalls dropped so far."""
        s = stalls.c
        cond: list[sa.ColumnElement[bool]] = []
        if filters.app is not None:
            cond.append(s.app_name == filters.app)
        if filters.session is not None:
            cond.append(s.session_id == filters.session)
        if filters.host is not None:
            cond.append(s.host == filters.host)
        if filters.since is not None:
            cond.append(s.started_at >= filters.since)
        query = sa.select(stalls).where(*cond).order_by(s.started_at.desc(), s.id.desc()).limit(limit).offset(offset)
        count = sa.select(sa.func.count()).select_from(stalls).where(*cond)
        dropped = sa.select(
            sa.func.coalesce(sa.func.sum(agents.c.stalls_dropped_agent), 0),
            sa.func.coalesce(sa.func.sum(agents.c.stalls_dropped_server), 0),
        )

        def fn(conn: sa.Connection) -> tuple[list[dict[str, Any]], int, int]:
            rows = [dict(r) for r in conn.execute(query).mappings().all()]
            by_agent, by_server = conn.execute(dropped).one()
            return rows, int(conn.execute(count).scalar_one()), int(by_agent) + int(by_server)

        return await self.db.read(fn)

    async def purge(self, *, before: datetime) -> int:
        """Delete stalls that started before ``before`` (kept as long as the audit log)."""

        def op(conn: sa.Connection) -> int:
            return int(conn.execute(stalls.delete().where(stalls.c.started_at < before)).rowcount)

        return await self.db.write(op)
