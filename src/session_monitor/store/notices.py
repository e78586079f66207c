"""SQL of notices: announcements, kills with notice, and the active set each agent shows in its pages.

An announcement or a pending kill and its audit entry commit in one transaction. A pending kill is carried out
by :meth:`NoticeStore.fire_due` at its deadline: the row is claimed (``fired_at``) and the normal kill written
in the same transaction, so on replicas sharing one database it runs once, and a restart loses none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from session_monitor.protocol import ANNOUNCEMENT, KILL_NOTICE, MAX_ACTIVE_ANNOUNCEMENTS, MAX_PENDING_KILLS
from session_monitor.store.models import UTCDateTime, agents, announcements, pending_kills, sessions
from session_monitor.store.repository import Actor, Store, kill_app_in, kill_session_in, write_audit


class NoticeConflict(Exception):
    """Too many active announcements or pending kills; the message says which limit."""


class UnknownTarget(Exception):
    """A target that does not exist (an app never seen, a host with no process, a session not live)."""


@dataclass(frozen=True)
class Fired:
    """A pending kill carried out: which agents to wake, how many sessions it killed."""

    pending_kill_id: int
    killed_count: int
    agent_ids: frozenset[str]


def _announcement_active(now: datetime) -> sa.ColumnElement[bool]:
    a = announcements.c
    return sa.and_(a.removed_at.is_(None), sa.or_(a.until.is_(None), a.until > now))


def _kill_pending() -> sa.ColumnElement[bool]:
    k = pending_kills.c
    return sa.and_(k.fired_at.is_(None), k.cancelled_at.is_(None))


def _announcement_dict(row: Any, now: datetime) -> dict[str, Any]:
    out = dict(row._mapping)
    out["active"] = out["removed_at"] is None and (out["until"] is None or out["until"] > now)
    return out


def _kill_dict(row: Any, now: datetime) -> dict[str, Any]:
    out = dict(row._mapping)
    state = "cancelled" if out["cancelled_at"] else "done" if out["fired_at"] else "pending"
    out["state"] = state
    out["seconds_left"] = max(0.0, (out["deadline"] - now).total_seconds()) if state == "pending" else 0.0
    return out


def revision(notices: list[dict[str, Any]]) -> str:
    """A short digest of an active set: equal sets, equal revisions."""
    return hashlib.blake2b(orjson.dumps(notices, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


class NoticeStore:
    """Announcements and pending kills, over the same database and clock as the session :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    # -- announcements ------------------------------------------------------------------------

    async def unknown_targets(
        self, *, apps: list[str] | None, hosts: list[str] | None, session_ids: list[str] | None
    ) -> str | None:
        """The first target that does not exist, as ``"app 'x'"``, or ``None``."""
        c = sessions.c

        def fn(conn: sa.Connection) -> str | None:
            for app in apps or ():
                if conn.execute(sa.select(c.session_id).where(c.app_name == app).limit(1)).first() is None:
                    return f"unknown app {app!r}"
            for host in hosts or ():
                agent = conn.execute(sa.select(agents.c.agent_id).where(agents.c.host == host).limit(1)).first()
                seen = conn.execute(sa.select(c.session_id).where(c.host == host).limit(1)).first()
                if agent is None and seen is None:
                    return f"unknown host {host!r}"
            for sid in session_ids or ():
                live = conn.execute(sa.select(c.session_id).where(c.session_id == sid, c.ended_at.is_(None))).first()
                if live is None:
                    return f"no live session {sid!r}"
            return None

        return await self.db.read(fn)

    async def announce(self, values: dict[str, Any], actor: Actor) -> dict[str, Any]:
        """Store an announcement (``message, level, apps, hosts, session_ids, until``) and its audit entry."""
        now = self.store.clock()

        def op(conn: sa.Connection) -> dict[str, Any]:
            active = conn.execute(sa.select(sa.func.count()).where(_announcement_active(now))).scalar_one()
            if active >= MAX_ACTIVE_ANNOUNCEMENTS:
                raise NoticeConflict(f"{MAX_ACTIVE_ANNOUNCEMENTS} announcements are active already: remove one first")
            row = conn.execute(
                announcements.insert()
                .values(**values, created_at=now, created_by=actor.name)
                .returning(*announcements.c)
            ).one()
            detail = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items() if v is not None}
            write_audit(conn, now, actor, "announce", f"announcement {row.id}", **detail)
            return _announcement_dict(row, now)

        return await self.db.write(op)

    async def remove_announcement(self, announcement_id: int, actor: Actor) -> dict[str, Any] | None:
        """Take an active announcement away (kept as history); ``None`` if none is active with this id."""
        now = self.store.clock()
        a = announcements.c

        def op(conn: sa.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                announcements.update()
                .where(a.id == announcement_id, _announcement_active(now))
                .values(removed_at=now, removed_by=actor.name)
                .returning(*announcements.c)
            ).first()
            if row is not None:
                write_audit(conn, now, actor, "unannounce", f"announcement {announcement_id}", message=row.message)
            return None if row is None else _announcement_dict(row, now)

        return await self.db.write(op)

    async def apps_of_announcement(self, announcement_id: int) -> tuple[bool, frozenset[str] | None]:
        """Whether the announcement is active, and the apps it targets (``None``: every app)."""
        a = announcements.c
        query = sa.select(a.apps).where(a.id == announcement_id, _announcement_active(self.store.clock()))

        def fn(conn: sa.Connection) -> tuple[bool, frozenset[str] | None]:
            row = conn.execute(query).first()
            if row is None:
                return False, None
            return True, None if row.apps is None else frozenset(row.apps)

        return await self.db.read(fn)

    async def apps_of_pending_kill(self, pending_kill_id: int) -> frozenset[str] | None:
        """The app a pending kill ends sessions of (its session's, or its own); ``None`` if none is pending."""
        k, c = pending_kills.c, sessions.c
        query = (
            sa.select(sa.func.coalesce(k.app_name, c.app_name).label("app"))
            .select_from(pending_kills.outerjoin(sessions, sessions.c.session_id == k.session_id))
            .where(k.id == pending_kill_id, _kill_pending())
        )

        def fn(conn: sa.Connection) -> frozenset[str] | None:
            row = conn.execute(query).first()
            return None if row is None or row.app is None else frozenset([str(row.app)])

        return await self.db.read(fn)

    async def list_announcements(self, *, include_inactive: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        now = self.store.clock()

        def fn(conn: sa.Connection) -> list[dict[str, Any]]:
            query = sa.select(announcements).order_by(announcements.c.id.desc()).limit(limit)
            if not include_inactive:
                query = query.where(_announcement_active(now))
            return [_announcement_dict(r, now) for r in conn.execute(query)]

        return await self.db.read(fn)

    # -- kills with notice --------------------------------------------------------------------

    async def schedule_kill(
        self, *, session_id: str | None, app_name: str | None, deadline: datetime, reason: str | None, actor: Actor
    ) -> dict[str, Any] | None:
        """A kill of one live session (or of every session of an app) at ``deadline``.

        ``None`` if the session is not live (or the app was never seen)."""
        now = self.store.clock()
        c = sessions.c

        def op(conn: sa.Connection) -> dict[str, Any] | None:
            if session_id is not None:
                where = sa.and_(c.session_id == session_id, c.ended_at.is_(None))
            else:
                where = c.app_name == app_name
            if conn.execute(sa.select(c.session_id).where(where).limit(1)).first() is None:
                return None
            pending = conn.execute(sa.select(sa.func.count()).where(_kill_pending())).scalar_one()
            if pending >= MAX_PENDING_KILLS:
                raise NoticeConflict(f"{MAX_PENDING_KILLS} kills are pending already")
            row = conn.execute(
                pending_kills.insert()
                .values(
                    session_id=session_id,
                    app_name=app_name,
                    deadline=deadline,
                    reason=reason,
                    created_at=now,
                    created_by=actor.name,
                )
                .returning(*pending_kills.c)
            ).one()
            target = session_id if session_id is not None else f"app {app_name}"
            write_audit(conn, now, actor, "kill_scheduled", target, pending_kill_id=row.id,
                        deadline=deadline.isoformat(), reason=reason)  # fmt: skip
            live = conn.execute(sa.select(sa.func.count()).where(where, c.ended_at.is_(None))).scalar_one()
            return {**_kill_dict(row, now), "live_count": int(live)}

        return await self.db.write(op)

    async def cancel_kill(self, pending_kill_id: int, actor: Actor) -> dict[str, Any] | None:
        """Cancel a pending kill before its deadline; ``None`` if none is pending with this id."""
        now = self.store.clock()
        k = pending_kills.c

        def op(conn: sa.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                pending_kills.update()
                .where(k.id == pending_kill_id, _kill_pending())
                .values(cancelled_at=now, cancelled_by=actor.name)
                .returning(*pending_kills.c)
            ).first()
            if row is not None:
                target = row.session_id if row.session_id is not None else f"app {row.app_name}"
                write_audit(conn, now, actor, "kill_cancelled", target, pending_kill_id=pending_kill_id)
            return None if row is None else _kill_dict(row, now)

        return await self.db.write(op)

    async def list_pending_kills(self, *, include_done: bool = False, limit: int = 1000) -> list[dict[str, Any]]:
        now = self.store.clock()

        def fn(conn: sa.Connection) -> list[dict[str, Any]]:
            query = sa.select(pending_kills).order_by(pending_kills.c.deadline).limit(limit)
            if not include_done:
                query = query.where(_kill_pending())
            return [_kill_dict(r, now) for r in conn.execute(query)]

        return await self.db.read(fn)

    async def next_deadline(self) -> datetime | None:
        """The soonest deadline of the pending kills."""

        def fn(conn: sa.Connection) -> datetime | None:
            query = sa.select(sa.func.min(pending_kills.c.deadline, type_=UTCDateTime())).where(_kill_pending())
            value: datetime | None = conn.execute(query).scalar_one()
            return value

        return await self.db.read(fn)

    async def fire_due(self) -> list[Fired]:
        """Carry out every pending kill whose deadline has come: claimed and killed in one transaction each."""
        now = self.store.clock()
        k = pending_kills.c

        def op(conn: sa.Connection) -> list[Fired]:
            due = conn.execute(
                pending_kills.update()
                .where(_kill_pending(), k.deadline <= now)
                .values(fired_at=now)
                .returning(k.id, k.session_id, k.app_name, k.reason, k.created_by)
            ).all()
            fired = []
            for row in due:
                actor = Actor(row.created_by)
                if row.session_id is not None:
                    killed = kill_session_in(conn, row.session_id, actor, row.reason, now)
                    agents_ = frozenset([killed.agent_id] if killed is not None and killed.agent_id else [])
                    fired.append(Fired(row.id, int(killed is not None), agents_))
                else:
                    outcome = kill_app_in(conn, row.app_name, actor, row.reason, now)
                    fired.append(Fired(row.id, outcome.killed_count, outcome.agent_ids))
            return fired

        return await self.db.write(op)

    # -- what agents show ---------------------------------------------------------------------

    async def active_for(self, agent_id: str) -> list[dict[str, Any]]:
        """The active notices of an agent's pages (as :class:`~session_monitor.protocol.Notice` dicts)."""
        now = self.store.clock()
        return await self.db.read(lambda conn: active_notices(conn, agent_id, now))

    async def live_agent_ids(self) -> list[str]:
        """The agents of running processes: whom a new or removed notice concerns."""

        def fn(conn: sa.Connection) -> list[str]:
            return list(conn.execute(sa.select(agents.c.agent_id).where(agents.c.exited_at.is_(None))).scalars())

        return await self.db.read(fn)

    async def purge(self, *, before: datetime) -> int:
        """Drop removed or expired announcements and done or cancelled kills older than ``before``."""

        def op(conn: sa.Connection) -> int:
            a, k = announcements.c, pending_kills.c
            n = conn.execute(
                announcements.delete().where(
                    sa.func.coalesce(a.removed_at, a.until, a.created_at) < before, ~_announcement_active(before)
                )  # fmt: skip
            ).rowcount
            n += conn.execute(
                pending_kills.delete().where(~_kill_pending(), sa.func.coalesce(k.fired_at, k.cancelled_at) < before)
            ).rowcount
            return int(n)

        return await self.db.write(op)


def active_notices(conn: sa.Connection, agent_id: str, now: datetime) -> list[dict[str, Any]]:
    """The active notices of an agent's pages: announcements for its host (or any), kills pending for its sessions
    or for any app (the agent matches apps and sessions). Runs in a read or in the agent's sync transaction."""
    k, c = pending_kills.c, sessions.c
    host = conn.execute(sa.select(agents.c.host).where(agents.c.agent_id == agent_id)).scalar()
    out: list[dict[str, Any]] = []
    for a in conn.execute(sa.select(announcements).where(_announcement_active(now)).order_by(announcements.c.id)):
        if a.hosts is not None and host not in a.hosts:
            continue
        out.append({"id": f"{ANNOUNCEMENT}:{a.id}", "kind": ANNOUNCEMENT, "message": a.message, "level": a.level,
                    "apps": a.apps, "session_ids": a.session_ids, "deadline": None, "until": a.until})  # fmt: skip
    of_agent = sa.select(c.session_id).where(c.agent_id == agent_id, c.ended_at.is_(None))
    kills = conn.execute(
        sa.select(k.id, k.session_id, k.app_name, k.deadline, k.reason)
        .where(_kill_pending(), sa.or_(k.session_id.is_(None), k.session_id.in_(of_agent)))
        .order_by(k.deadline)
    )
    for kill in kills:
        out.append({"id": f"{KILL_NOTICE}:{kill.id}", "kind": KILL_NOTICE, "message": kill.reason or "",
                    "level": "error", "apps": None if kill.app_name is None else [kill.app_name],
                    "session_ids": None if kill.session_id is None else [kill.session_id],
                    "deadline": kill.deadline, "until": None})  # fmt: skip
    return out
