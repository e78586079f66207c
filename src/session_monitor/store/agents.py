"""SQL of the agent protocol: agents, their sessions' batched state, and the command queue.

One sync is one write transaction whatever the number of sessions it carries:
an upsert of the sessions that changed, the agent row (its ``last_seen`` is the
heartbeat of all its live sessions: no session row is written for a heartbeat),
the ends, and a read of the kills still pending. A sync costs O(changed sessions).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from session_monitor.protocol import KILL, SyncRequest
from session_monitor.store.base import end_values
from session_monitor.store.config import follow
from session_monitor.store.drains import drain_of, split_drain
from session_monitor.store.lost import PROCESS_LOST, lost_since
from session_monitor.store.models import agents, commands, sessions
from session_monitor.store.notices import active_notices
from session_monitor.store.repository import Store
from session_monitor.store.stalls import loop_facts, split_loop

_CHUNK = 500
"""Rows per multi-row statement (SQLite allows 32,766 bound parameters)."""


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


REVIVABLE = ("expired", "browser_lost", PROCESS_LOST)
"""End reasons a session reported live again by its agent comes back from."""


def _upsert_sessions(conn: sa.Connection) -> Any:
    """The sessions an agent reports, inserted or updated; run with one parameter set per session."""
    c = sessions.c
    stmt = _insert(conn, sessions)
    ex = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[c.session_id],
        set_={
            "app_name": ex.app_name,
            "user_id": ex.user_id,
            "status": ex.status,
            "current_task": ex.current_task,
            "task_started_at": ex.task_started_at,
            "host": ex.host,
            "pid": ex.pid,
            "agent_id": ex.agent_id,
            "visibility": ex.visibility,
            "last_interaction_at": ex.last_interaction_at,
            "disconnected_at": ex.disconnected_at,
            "changed_at": ex.changed_at,
            "last_heartbeat": ex.last_heartbeat,
            # A state change sent without a cost (not measured yet) keeps the last one.
            "cost": sa.func.coalesce(ex.cost, c.cost),
            "exempt": ex.exempt,
            "ended_at": None,
            "end_reason": None,
            "ended_by": None,
        },
        # Revive a session the reaper expired, or the server declared lost, while its agent was
        # cut off, or whose browser came back after the grace (Bokeh re-creates it under the same
        # id); never one that was killed or closed.
        # (The reasons are spelled out: an expanding IN cannot run with many parameter sets.)
        where=sa.or_(c.ended_at.is_(None), *(c.end_reason == reason for reason in REVIVABLE)),
    )


def _live_of(agent_id: str) -> sa.ColumnElement[bool]:
    c = sessions.c
    return sa.and_(c.agent_id == agent_id, c.ended_at.is_(None))


def _stamp_agent(conn: sa.Connection, agent_id: str, req: SyncRequest, now: datetime) -> datetime | None:
    """Insert or update the agent row (its ``last_seen`` is the heartbeat of all its live sessions).

    Returns the agent's previous ``last_seen``, ``None`` for an agent not seen before.
    """
    previous = conn.execute(sa.select(agents.c.last_seen).where(agents.c.agent_id == agent_id)).scalar()
    info = req.agent
    facts = {
        "host": info.host,
        "pid": info.pid,
        "command": info.command,
        "versions": info.versions,
        "cpu_percent": info.cpu_percent,
        "rss_bytes": info.rss_bytes,
        "last_seen": now,
        "exited_at": now if req.exiting else None,
        "leftovers": [item.model_dump(mode="json") for item in info.leftovers] or None,
        **loop_facts(info.loop, now),
    }
    stmt = _insert(conn, agents).values(agent_id=agent_id, started_at=info.started_at, **facts)
    conn.execute(stmt.on_conflict_do_update(index_elements=[agents.c.agent_id], set_=facts))
    return previous


def _upsert_reported(conn: sa.Connection, agent_id: str, req: SyncRequest, now: datetime) -> None:
    """The sessions that changed, inserted or updated (a revivable ended one comes back)."""
    if not req.sessions:
        return
    info = req.agent
    rows = [
        {
            "session_id": s.session_id,
            "app_name": s.app_name,
            "user_id": s.user_id,
            "status": s.status,
            "current_task": s.current_task,
            "task_started_at": s.task_started_at,
            "start_time": min(s.started_at, now),
            "last_heartbeat": now,
            "kill_requested": False,
            "host": info.host,
            "pid": info.pid,
            "agent_id": agent_id,
            "visibility": s.visibility,
            "last_interaction_at": s.last_interaction_at,
            "disconnected_at": s.disconnected_at,
            "changed_at": now,
            "cost": None if s.cost is None else s.cost.model_dump(mode="json"),
            "exempt": s.exempt,
        }
        for s in req.sessions
    ]
    # One statement run with many parameter sets: compiled once and cached, where a multi-row
    # VALUES built from the rows was compiled anew on every sync (most of a small sync's time).
    conn.execute(_upsert_sessions(conn), rows)


def _end_reported(conn: sa.Connection, agent_id: str, req: SyncRequest, now: datetime) -> None:
    """The ends the agent reports, each at its own time (never later than now) and for its own reason."""
    if not req.ended:
        return
    c = sessions.c
    conn.execute(
        sessions.update()
        .where(
            c.session_id == sa.bindparam("sid"),
            # The agent's own account of an end beats the server's guess that its process was lost.
            sa.or_(c.ended_at.is_(None), c.end_reason == PROCESS_LOST),
            sa.or_(c.agent_id == agent_id, c.agent_id.is_(None)),
        )
        .values(**end_values(sa.bindparam("reason"), "agent", now, at=sa.bindparam("at"))),
        [{"sid": e.session_id, "at": min(e.ended_at, now), "reason": e.reason} for e in req.ended],
    )


def _end_unlisted(conn: sa.Connection, agent_id: str, req: SyncRequest, now: datetime) -> None:
    """A full sync: end as ``closed`` the agent's live sessions it no longer has (their end was lost).

    Chosen by id, not by ``last_heartbeat < now``: a clock that did not move (or moved back: another
    replica, an NTP step) since the last sync left them live.
    """
    c = sessions.c
    listed = {s.session_id for s in req.sessions}
    live = conn.execute(sa.select(c.session_id).where(_live_of(agent_id))).scalars().all()
    for chunk in _chunks([sid for sid in live if sid not in listed]):
        conn.execute(
            sessions.update()
            .where(_live_of(agent_id), c.session_id.in_(chunk))
            .values(**end_values("closed", "agent", now))
        )


def _mark_back_from_silence(conn: sa.Connection, agent_id: str, now: datetime) -> None:
    """An agent back from a silence long enough to show its sessions ``stale``: mark them changed.

    No session row is written for a heartbeat (see ``render.effective_heartbeat``); without this stamp,
    live views following ``changed_since`` would not see them come back.
    """
    conn.execute(sessions.update().where(_live_of(agent_id)).values(changed_at=now))


def _end_all(conn: sa.Connection, agent_id: str, now: datetime) -> None:
    """The agent's process exits: every live session of it ends as ``process_exit``."""
    conn.execute(sessions.update().where(_live_of(agent_id)).values(**end_values("process_exit", "agent", now)))


@dataclass(frozen=True)
class SyncResult:
    resync: bool
    commands: list[dict[str, Any]]
    notices: list[dict[str, Any]]
    drain: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    """The shared-config changes for the apps the agent follows (when its sync said which)."""
    new_follow: bool = False
    """The sync changed the agent's follow epoch: its long-poll (waiting with the new epoch) must re-read."""


class AgentStore:
    """Agents and the command queue, over the same database and clock as the session :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    async def sync(self, agent_id: str, req: SyncRequest) -> SyncResult:
        """Apply one agent sync in one write transaction; returns whether to resync and the kills to carry out."""
        now = self.store.clock()

        def op(conn: sa.Connection) -> SyncResult:
            epoch = conn.execute(sa.select(agents.c.config_epoch).where(agents.c.agent_id == agent_id)).scalar()
            last_seen = _stamp_agent(conn, agent_id, req, now)
            cfg = req.config
            changes = None if cfg is None else follow(conn, agent_id, cfg.apps, cfg.epoch, cfg.after)
            _upsert_reported(conn, agent_id, req, now)
            _end_reported(conn, agent_id, req, now)
            if req.full:
                _end_unlisted(conn, agent_id, req, now)
            if last_seen is not None and last_seen < now - self.store.stale_after:
                _mark_back_from_silence(conn, agent_id, now)
            if req.exiting:
                _end_all(conn, agent_id, now)
            # Back after the server declared it lost: its full sync revives the sessions it still has.
            resync = not req.full and (last_seen is None or lost_since(conn, agent_id, last_seen))
            pending = self._pending(conn, agent_id, req)
            notices = active_notices(conn, agent_id, now)
            return SyncResult(
                resync=resync,
                commands=pending,
                notices=notices,
                drain=drain_of(conn, agent_id),
                config=changes,
                new_follow=cfg is not None and cfg.epoch != epoch,
            )

        return await self.db.write(op)

    @staticmethod
    def _pending(conn: sa.Connection, agent_id: str, req: SyncRequest) -> list[dict[str, Any]]:
        """Kills still to carry out: stored intent on live sessions, and sessions reported that were killed."""
        c = sessions.c
        found = list(
            conn.execute(
                sa.select(c.session_id, c.kill_reason, c.kill_requested_by).where(
                    c.agent_id == agent_id, c.ended_at.is_(None), c.kill_requested
                )
            ).all()
        )
        for chunk in _chunks([s.session_id for s in req.sessions]):
            found += conn.execute(
                sa.select(c.session_id, c.kill_reason, c.kill_requested_by).where(
                    c.session_id.in_(chunk), c.end_reason == "killed"
                )
            ).all()
        return [
            {"id": 0, "kind": KILL, "session_id": sid, "reason": reason, "actor": actor}
            for sid, reason, actor in dict.fromkeys(found)
        ]

    async def fetch_commands(self, agent_id: str, after: int, limit: int = 500) -> tuple[list[dict[str, Any]], int]:
        """Queued commands with ``id > after``; the cursor to pass next (reset if the queue was recreated)."""
        q = commands.c

        def fn(conn: sa.Connection) -> tuple[list[dict[str, Any]], int]:
            rows = (
                conn.execute(
                    sa.select(q.id, q.kind, q.session_id, q.reason, q.actor)
                    .where(q.agent_id == agent_id, q.id > after)
                    .order_by(q.id)
                    .limit(limit)
                )
                .mappings()
                .all()
            )
            if rows:
                return [dict(r) for r in rows], int(rows[-1]["id"])
            newest = conn.execute(sa.select(sa.func.max(q.id))).scalar_one() or 0
            # A cursor beyond the newest id means the database was recreated: start over from its newest.
            return [], min(after, int(newest))

        return await self.db.read(fn)

    async def list_agents(self, *, include_exited: bool = False) -> list[dict[str, Any]]:
        now = self.store.clock()
        stale_after = self.store.stale_after
        c = sessions.c

        def fn(conn: sa.Connection) -> list[dict[str, Any]]:
            query = sa.select(agents).order_by(agents.c.host, agents.c.pid)
            if not include_exited:
                query = query.where(agents.c.exited_at.is_(None))
            rows = conn.execute(query).mappings().all()
            counts: dict[str, dict[str, int]] = {}
            for agent, app, n in conn.execute(
                sa.select(c.agent_id, c.app_name, sa.func.count())
                .where(c.agent_id.is_not(None), c.ended_at.is_(None))
                .group_by(c.agent_id, c.app_name)
            ).all():
                counts.setdefault(agent, {})[app] = int(n)
            out = []
            for r in rows:
                apps = counts.get(r["agent_id"], {})
                row, loop = split_loop(r)
                row, drain = split_drain(row)
                out.append(
                    {
                        **row,
                        "drain": drain,
                        "leftovers": r["leftovers"] or [],
                        "loop": loop,
                        "session_count": sum(apps.values()),
                        "apps": sorted(apps),
                        "is_stale": r["exited_at"] is None and now - r["last_seen"] > stale_after,
                    }
                )
            return out

        return await self.db.read(fn)

    async def count_leftovers(self) -> dict[str, int]:
        """Leftovers of ended sessions that live processes report now, by kind."""

        def fn(conn: sa.Connection) -> dict[str, int]:
            counts: dict[str, int] = {}
            query = sa.select(agents.c.leftovers).where(agents.c.exited_at.is_(None), agents.c.leftovers.is_not(None))
            for (items,) in conn.execute(query):
                for item in items or ():
                    kind = str(item.get("kind", "unknown"))
                    counts[kind] = counts.get(kind, 0) + 1
            return counts

        return await self.db.read(fn)

    async def purge(self, *, commands_before: datetime, agents_before: datetime) -> tuple[int, int]:
        """Drop commands nobody will fetch any more and agents gone for longer than the history is kept."""

        def op(conn: sa.Connection) -> tuple[int, int]:
            n_cmd = conn.execute(commands.delete().where(commands.c.created_at < commands_before)).rowcount
            n_agents = conn.execute(agents.delete().where(agents.c.last_seen < agents_before)).rowcount
            return int(n_cmd), int(n_agents)

        return await self.db.write(op)


COMMAND_RETENTION = timedelta(days=1)
"""Queued commands are kept this long; an agent away longer gets its kills from the stored intent instead."""
