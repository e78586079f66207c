"""Notices on the server side: telling agents the active set changed, and carrying out kills at their deadline.

A new, removed or expired notice wakes every running agent's command long-poll (``CommandHub.notify``, across
replicas too); each long-poll re-reads its agent's active set and answers only if its revision changed. The
:class:`PendingKillRunner` sleeps until the soonest deadline (at most :data:`POLL_S`, so a kill another replica
scheduled is seen), then carries the due kills out as normal kills (``NoticeStore.fire_due``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from session_monitor.server.commands import CommandHub
from session_monitor.store.notices import Fired, NoticeStore

logger = logging.getLogger(__name__)

POLL_S = 1.0
"""Longest sleep of the pending-kill runner: a kill scheduled on another replica is due-checked this often."""


async def broadcast(notices: NoticeStore, hub: CommandHub) -> None:
    """The active notices changed: every running agent re-reads its set now."""
    hub.notify(await notices.live_agent_ids())


class PendingKillRunner:
    """Carries out kills with notice at their deadline (one per server process; the claim makes it run once)."""

    def __init__(
        self, notices: NoticeStore, hub: CommandHub, *, on_fired: Callable[[Fired], None] | None = None
    ) -> None:
        self.notices = notices
        self.hub = hub
        self.on_fired = on_fired
        self.changed = asyncio.Event()
        """Set when a kill was scheduled or cancelled here: the next deadline is read again at once."""

    async def run_once(self) -> float:
        """Fire what is due; returns how long to sleep until the next deadline (at most :data:`POLL_S`)."""
        deadline = await self.notices.next_deadline()
        now = self.notices.store.clock()
        if deadline is not None and deadline <= now:
            fired = await self.notices.fire_due()
            for item in fired:
                logger.info("pending kill %s carried out: %d session(s)", item.pending_kill_id, item.killed_count)
                self.hub.notify(item.agent_ids)
                if self.on_fired is not None:
                    self.on_fired(item)
            if fired:
                await broadcast(self.notices, self.hub)  # their countdowns leave the active set
            deadline = await self.notices.next_deadline()
            now = self.notices.store.clock()
        if deadline is None:
            return POLL_S
        return min(POLL_S, max(0.0, (deadline - now).total_seconds()))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                delay = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("pending kills: pass failed; retrying in %.0f s", POLL_S)
                delay = POLL_S
            waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.changed.wait())]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()
            self.changed.clear()
