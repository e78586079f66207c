"""Sending commands to agents: the durable intent is in the database; this wakes the agent's long-poll at once.

An agent holds ``GET /agents/{id}/commands?wait=...`` open; a kill commits its
intent and its command row, then :meth:`CommandHub.notify` wakes that request,
which reads the new rows and answers. An agent that was away reads them (or,
after the queue's retention, the stored intent in its next sync) when it is back.

With several replicas on one PostgreSQL the long-poll may be held by another
replica than the one that took the kill: :meth:`CommandHub.notify` then also hands
the agent ids to a publisher (``server.coordination.PgCoordinator``) that sends a
PostgreSQL ``NOTIFY``; every replica ``LISTEN``s and wakes its own long-polls with
:meth:`CommandHub.wake`. A wake-up is only a hint to re-read: a lost one costs
latency (the next sync carries the kill), never the kill itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

Publisher = Callable[[list[str]], None]
"""Tells the other replicas which agents have new commands; must not block."""


class CommandHub:
    """In-process wake-ups, one event per agent with a request waiting, and an optional cross-replica publisher."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiters: dict[str, int] = {}
        self.closing = False
        self.publisher: Publisher | None = None

    def close(self) -> None:
        """Server shutting down: answer every waiting long-poll now."""
        self.closing = True
        self.wake_all()

    def notify(self, agent_ids: Iterable[str]) -> None:
        """Commands for these agents were committed: wake their long-polls here and on the other replicas."""
        ids = list(dict.fromkeys(agent_ids))
        self.wake(ids)
        if ids and self.publisher is not None:
            self.publisher(ids)

    def wake(self, agent_ids: Iterable[str]) -> None:
        """Wake the long-polls of these agents held by this process (they re-read their commands)."""
        for agent_id in agent_ids:
            event = self._events.get(agent_id)
            if event is not None:
                event.set()

    def wake_all(self) -> None:
        """Wake every long-poll held here: after missed notifications (listener reconnected), or at shutdown."""
        for event in self._events.values():
            event.set()

    def subscribe(self, agent_id: str) -> asyncio.Event:
        """An event set by the next ``notify`` of this agent; call :meth:`unsubscribe` when done."""
        event = self._events.setdefault(agent_id, asyncio.Event())
        event.clear()
        self._waiters[agent_id] = self._waiters.get(agent_id, 0) + 1
        return event

    def unsubscribe(self, agent_id: str) -> None:
        left = self._waiters.get(agent_id, 1) - 1
        if left <= 0:
            self._waiters.pop(agent_id, None)
            self._events.pop(agent_id, None)
        else:
            self._waiters[agent_id] = left

    @property
    def waiting(self) -> int:
        return sum(self._waiters.values())
