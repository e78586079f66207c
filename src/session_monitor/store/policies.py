"""SQL of the policies: the one stored document, its audited replacement, and the live counts behind the limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from session_monitor.protocol import Policies
from session_monitor.store.models import agents, policies, sessions
from session_monitor.store.repository import Actor, Store, write_audit

POLICY_ROW_ID = 1


@dataclass(frozen=True)
class StoredPolicies:
    policies: Policies
    updated_at: datetime | None = None
    updated_by: str | None = None


@dataclass(frozen=True)
class LiveGroups:
    """Live sessions by (agent, app, user), the one read all the limit counts are derived from."""

    groups: list[tuple[str | None, str, str | None, int]] = field(default_factory=list)
    processes: list[dict[str, Any]] = field(default_factory=list)
    """Live agents with their live session counts: ``agent_id, host, pid, sessions``."""


class PolicyStore:
    """The policies over the same database and clock as the session :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = store.db

    async def get(self) -> StoredPolicies:
        """The policies in force (none set yet: no limits, no exemptions)."""

        def fn(conn: sa.Connection) -> StoredPolicies:
            row = conn.execute(sa.select(policies).where(policies.c.id == POLICY_ROW_ID)).mappings().first()
            if row is None:
                return StoredPolicies(Policies())
            return StoredPolicies(Policies.model_validate(row["document"]), row["updated_at"], row["updated_by"])

        return await self.db.read(fn)

    async def put(self, new: Policies, actor: Actor) -> StoredPolicies:
        """Replace the policies; the change and the previous policies go to the audit log in the same transaction."""
        now = self.store.clock()
        document = new.model_dump(mode="json")

        def op(conn: sa.Connection) -> StoredPolicies:
            old = conn.execute(sa.select(policies.c.document).where(policies.c.id == POLICY_ROW_ID)).scalar()
            values = {"document": document, "updated_at": now, "updated_by": actor.name}
            if old is None:
                conn.execute(policies.insert().values(id=POLICY_ROW_ID, **values))
            else:
                conn.execute(policies.update().where(policies.c.id == POLICY_ROW_ID).values(**values))
            write_audit(conn, now, actor, "policies", "policies", policies=document, previous=old)
            return StoredPolicies(new, now, actor.name)

        return await self.db.write(op)

    async def live_groups(self) -> LiveGroups:
        """Live sessions grouped by agent, app and user, and each live agent's count."""
        c, a = sessions.c, agents.c

        def fn(conn: sa.Connection) -> LiveGroups:
            groups = [
                (agent, app, user, int(n))
                for agent, app, user, n in conn.execute(
                    sa.select(c.agent_id, c.app_name, c.user_id, sa.func.count())
                    .where(c.ended_at.is_(None))
                    .group_by(c.agent_id, c.app_name, c.user_id)
                ).all()
            ]
            per_agent: dict[str | None, int] = {}
            for agent, _, _, n in groups:
                per_agent[agent] = per_agent.get(agent, 0) + n
            rows = conn.execute(
                sa.select(a.agent_id, a.host, a.pid).where(a.exited_at.is_(None)).order_by(a.host, a.pid)
            ).all()
            processes = [
                {"agent_id": r.agent_id, "host": r.host, "pid": r.pid, "sessions": per_agent.get(r.agent_id, 0)}
                for r in rows
            ]
            return LiveGroups(groups, processes)

        return await self.db.read(fn)
