"""Sending commands to agents: the durable intent is in the database; this wakes the agent's long-poll at once.

An agent holds ``GET /agents/{id}/commands?wait=...`` open; a kill commits its
intent and its command row, then :meth:`CommandHub.notify` wakes that request,
which reads the new rows and answers. An agent that was away reads them (or,
after the queue's retention, the stored intent in its next sync) when it is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class CommandHub:
    """In-process wake-ups, one event per agent with a request waiting."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._waiters: dict[str, int] = {}
        self.closing = False

    def close(self) -> None:
        """Server shutting down: answer every waiting long-poll now."""
        self.closing = True
        for event in self._events.values():
            event.set()

    def notify(self, agent_ids: Iterable[str]) -> None:
        for agent_id in agent_ids:
            event = self._events.get(agent_id)
            if event is not None:
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
