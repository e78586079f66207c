"""Lost agents: a Panel process killed without a word (SIGKILL, the OOM killer) has its sessions ended at once.

Such a process sends no last sync; before, its sessions looked live for two minutes, then stale until
expired at ten. But the server holds each agent's command long-poll, and the kernel closes a dead
process's sockets: the server sees that request's client disconnect. A live agent whose long-poll
dropped (a blip, a proxy restart) polls again within 2 s and syncs every sync interval. So an agent
is **lost** when this server process saw its long-poll drop and, for ``process_lost_after_s`` after
that, it neither polled here again nor synced anywhere; its live sessions end as ``process_lost``.

Guards against a misfire:

- **server restart**: only drops this process observed count, so a new server, which saw none of the
  drops of the old one, ends nothing; and no decision is taken in its first sync interval.
- **network blip**: the agent's next poll here clears the suspicion at once; its next sync anywhere
  moves the shared ``agents.last_seen`` and clears it too.
- **replicas on PostgreSQL**: an agent that failed over to another replica syncs there. The decision
  is taken against the shared database: sessions are ended only if ``last_seen`` is still the value read
  after the drop (``store.lost.end_lost_agent``, under a row lock), never from this replica's memory alone.
  Every replica checks the drops it saw itself, whichever runs the reaper.
- **a stalled process** (a blocked event loop) keeps its agent thread, which keeps polling and syncing.

A lost agent that comes back (its sync reaches the server) is asked for a full sync, which revives the
sessions it still has, as for ``expired`` ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from session_monitor.store.lost import LostAgent, agents_last_seen, end_lost_agent
from session_monitor.store.repository import Store

logger = logging.getLogger(__name__)


@dataclass
class _Suspect:
    dropped_at: float
    """``time.monotonic()`` when the long-poll dropped."""
    last_seen: datetime | None = None
    """The agent's ``last_seen`` read after the drop (``None`` until read)."""


class LossWatch:
    """The agents whose long-poll this server process saw drop, until they come back or are declared lost."""

    def __init__(self, *, lost_after_s: float, warmup_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lost_after_s = lost_after_s
        self.warmup_s = warmup_s
        self._clock = clock
        self._started = clock()
        self._suspects: dict[str, _Suspect] = {}

    def dropped(self, agent_id: str) -> None:
        """The agent's long-poll ended because its client went away (not answered, not at shutdown)."""
        self._suspects.setdefault(agent_id, _Suspect(self._clock()))

    def back(self, agent_id: str) -> None:
        """The agent polled or synced here: it is alive."""
        self._suspects.pop(agent_id, None)

    @property
    def suspects(self) -> int:
        return len(self._suspects)

    async def check(self, store: Store) -> list[LostAgent]:
        """Read the baseline of new suspects; end the sessions of those silent past the grace. Returns those ended."""
        if not self._suspects:
            return []
        unread = [agent_id for agent_id, s in self._suspects.items() if s.last_seen is None]
        if unread:
            seen = await agents_last_seen(store, unread)
            for agent_id in unread:
                suspect = self._suspects.get(agent_id)
                if suspect is None or suspect.last_seen is not None:
                    continue
                if agent_id in seen:
                    suspect.last_seen = seen[agent_id]
                else:  # unknown here, or exited (its last sync said goodbye): nothing to end
                    del self._suspects[agent_id]
        now = self._clock()
        if now - self._started < self.warmup_s:
            return []
        due = [
            (agent_id, s)
            for agent_id, s in self._suspects.items()
            if s.last_seen is not None and now - s.dropped_at >= self.lost_after_s
        ]
        lost: list[LostAgent] = []
        for agent_id, suspect in due:
            assert suspect.last_seen is not None
            found = await end_lost_agent(store, agent_id, suspect.last_seen)  # on an error: tried again next time
            if self._suspects.get(agent_id) is suspect:
                del self._suspects[agent_id]
            if found is None:
                continue  # it synced (maybe on another replica) since the drop: alive
            logger.warning(
                "agent %s (%s pid %s) lost: its long-poll dropped and it has not polled or synced for %.0f s; "
                "%d sessions ended as process_lost",
                agent_id,
                found.host,
                found.pid,
                self.lost_after_s,
                found.sessions_ended,
            )
            lost.append(found)
        return lost


async def run_loss_watch(
    watch: LossWatch,
    store: Store,
    *,
    interval_s: float,
    stop: asyncio.Event,
    on_lost: Callable[[LostAgent], None] | None = None,
) -> None:
    """Check every ``interval_s`` until ``stop`` is set (cheap when no long-poll dropped: no database work)."""
    while not stop.is_set():
        try:
            for agent in await watch.check(store):
                if on_lost is not None:
                    on_lost(agent)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("lost-agent check failed; retrying in %.0f s", interval_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)


async def get_loss_watch(request: Request) -> LossWatch:
    watch: LossWatch = request.app.state.loss_watch
    return watch


LossWatchDep = Annotated[LossWatch, Depends(get_loss_watch)]
