"""Draining in the Panel binding: the message and a countdown in every page of a draining process, then the end.

The agent's :class:`~session_monitor.client.draining.DrainWatch` calls this (on the agent thread) when the
process's drain changes and at its deadline; the binding (``panel.py``) calls :meth:`PanelDrain.session_started`
when a session's first websocket connects, so a page opened on a draining process (a sticky reload) gets
the countdown too, or ends at once after the deadline. Everything here only queues work on the sessions'
IOLoops, through the functions the binding hands in (this module never imports ``panel.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from session_monitor.client.agent import current_agent
from session_monitor.client.banner import Banner
from session_monitor.client.draining import Drain, DrainWatch

logger = logging.getLogger("session_monitor.client.panel")

DRAIN_KEY = "drain"
"""The banner key of the drain countdown."""

DRAINED = "drained"
"""The end reason of a session whose process was drained and whose deadline came."""


def countdown(drain: Drain) -> Banner:
    """The page's countdown: ``This session ends in 4:59: <message>``."""
    return Banner(key=DRAIN_KEY, message=drain.message, level="warning", deadline=drain.deadline)


def ended_message(drain: Drain) -> str:
    """The closing notice of a drained session."""
    return f"This session has ended: {drain.message}" if drain.message else "This session has ended (maintenance)."


class PanelDrain:
    """The drain listener of the Panel binding (a ``DrainListener``)."""

    def __init__(
        self,
        sessions: Callable[[], list[str]],
        show: Callable[[str, Banner], bool],
        remove: Callable[[str, str], bool],
        end: Callable[[str, str, str], bool],
    ) -> None:
        self._sessions, self._show, self._remove, self._end = sessions, show, remove, end

    def drain_changed(self, drain: Drain | None) -> None:
        for session_id in self._sessions():
            if drain is None:
                self._remove(session_id, DRAIN_KEY)
            else:
                self._show(session_id, countdown(drain))

    def drain_due(self, drain: Drain) -> None:
        ids = self._sessions()
        logger.info("drain deadline: %d session(s) end as drained", len(ids))
        for session_id in ids:
            self._end(session_id, DRAINED, ended_message(drain))

    def session_started(self, session_id: str, watch: DrainWatch) -> None:
        """A session's first websocket, in a draining process: show the countdown, or end it after the deadline."""
        drain = watch.current
        if drain is None:
            return
        if drain.seconds_left() <= 0:
            self._end(session_id, DRAINED, ended_message(drain))
        else:
            self._show(session_id, countdown(drain))


_installed: PanelDrain | None = None


def install(
    sessions: Callable[[], list[str]],
    show: Callable[[str, Banner], bool],
    remove: Callable[[str, str], bool],
    end: Callable[[str, str, str], bool],
) -> None:
    """Have the agent's drain reach this process's pages: one :class:`PanelDrain` per process (idempotent)."""
    global _installed
    agent = current_agent()
    if agent is None or _installed is not None:
        return
    _installed = PanelDrain(sessions, show, remove, end)
    agent.draining.listen(_installed)


def session_started(session_id: str) -> None:
    """The binding's hook for a session's first websocket (see :meth:`PanelDrain.session_started`)."""
    agent = current_agent()
    if _installed is not None and agent is not None:
        _installed.session_started(session_id, agent.draining)
