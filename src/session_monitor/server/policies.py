"""The policies in force and the live counts behind the limits, as every agent sync answer carries them.

One read of the live sessions grouped by (agent, app, user) serves every sync for :data:`COUNTS_MAX_AGE_S`:
an agent gets the counts of the *other* processes (the totals less its own part), since it counts its own
sessions itself, exactly. The policies are re-read with the counts, so a replica picks up another replica's
``PUT /policies`` within that time too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from session_monitor.protocol import LiveCounts, Policies
from session_monitor.store.policies import LiveGroups, PolicyStore, StoredPolicies

logger = logging.getLogger(__name__)

COUNTS_MAX_AGE_S = 0.5
"""Longest a snapshot of the live counts (and of the policies) serves sync answers."""


@dataclass
class _Tally:
    apps: dict[str, int] = field(default_factory=dict)
    app_users: dict[str, dict[str, int]] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)

    def add(self, policies: Policies, app: str, user: str | None, n: int) -> None:
        limits = policies.apps.get(app)
        if limits is not None and limits.max_sessions is not None:
            self.apps[app] = self.apps.get(app, 0) + n
        if user is None:
            return
        if limits is not None and limits.max_sessions_per_user is not None:
            per_app = self.app_users.setdefault(app, {})
            per_app[user] = per_app.get(user, 0) + n
        if policies.max_sessions_per_user is not None:
            self.users[user] = self.users.get(user, 0) + n

    def minus(self, own: _Tally | None) -> dict[str, Any]:
        """The counts as JSON, less ``own`` (an agent's part); zero counts left out."""
        if own is None:
            return {"apps": self.apps, "app_users": self.app_users, "users": self.users}
        apps = _less(self.apps, own.apps)
        users = _less(self.users, own.users)
        app_users = {a: _less(u, own.app_users.get(a, {})) for a, u in self.app_users.items()}
        return {"apps": apps, "app_users": {a: u for a, u in app_users.items() if u}, "users": users}


def _less(total: dict[str, int], own: dict[str, int]) -> dict[str, int]:
    if not own:
        return total
    out = {k: n - own.get(k, 0) for k, n in total.items()}
    return {k: n for k, n in out.items() if n > 0}


@dataclass(frozen=True)
class Snapshot:
    stored: StoredPolicies
    totals: _Tally
    by_agent: dict[str | None, _Tally]
    groups: LiveGroups
    taken_at: float

    def others(self, agent_id: str | None) -> dict[str, Any] | None:
        """The live counts of every process but ``agent_id``'s; ``None`` when no limit is set."""
        if not self.stored.policies.has_limits:
            return None
        return self.totals.minus(self.by_agent.get(agent_id))

    def counts(self) -> LiveCounts:
        return LiveCounts.model_validate(self.totals.minus(None))


def tally(policies: Policies, groups: LiveGroups) -> tuple[_Tally, dict[str | None, _Tally]]:
    totals, by_agent = _Tally(), dict[str | None, _Tally]()
    for agent, app, user, n in groups.groups:
        totals.add(policies, app, user, n)
        by_agent.setdefault(agent, _Tally()).add(policies, app, user, n)
    return totals, by_agent


class PolicyCache:
    """The latest :class:`Snapshot`, refreshed on demand when older than :data:`COUNTS_MAX_AGE_S`."""

    def __init__(self, store: PolicyStore, *, max_age_s: float = COUNTS_MAX_AGE_S) -> None:
        self.store = store
        self.max_age_s = max_age_s
        self._snapshot: Snapshot | None = None
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """The policies changed here: the next read takes a new snapshot."""
        self._snapshot = None

    async def snapshot(self, *, fresh: bool = False) -> Snapshot:
        current = self._snapshot
        if current is not None and not fresh and time.monotonic() - current.taken_at < self.max_age_s:
            return current
        async with self._lock:  # one read for all the syncs waiting on it
            current = self._snapshot
            if current is not None and not fresh and time.monotonic() - current.taken_at < self.max_age_s:
                return current
            stored = await self.store.get()
            groups = await self.store.live_groups() if stored.policies.has_limits or fresh else LiveGroups()
            totals, by_agent = tally(stored.policies, groups)
            self._snapshot = Snapshot(stored, totals, by_agent, groups, time.monotonic())
            return self._snapshot
