"""The process-wide "current work" slot: which session's callback the IOLoop runs right now.

Set and cleared around each callback the dispatch wrappers (``dispatch.py``) time on the loop thread;
a watchdog thread reads it while the loop is blocked to name the session. One slot per process: Panel
serves all its sessions on one IOLoop. Plain assignments of one tuple, so a reader on another thread
sees either the old or the new value, never a mix.
"""

from __future__ import annotations

import time
from typing import Any

Running = tuple[str, str, float]
"""``(session_id, qualname, started_at)``, ``started_at`` from :func:`time.monotonic`."""

_running: tuple[str, Any, float] | None = None
"""What :func:`running` returns, the name possibly still a callable (named only if someone reads it)."""


def set_running(session_id: str, qualname: str | Any, started_at: float | None = None) -> None:
    """The loop starts running ``qualname`` for ``session_id``.

    ``qualname`` may be the callable itself: it is named only when :func:`running` is called (a watchdog
    during a stall), which keeps naming off the path of every callback.
    """
    global _running
    _running = (session_id, qualname, time.monotonic() if started_at is None else started_at)


def rename_running(qualname: str | Any) -> None:
    """The work in progress is better named ``qualname`` (a handler found inside it); its start is kept."""
    global _running
    current = _running
    if current is not None:
        _running = (current[0], qualname, current[2])


def clear_running() -> None:
    global _running
    _running = None


def running() -> Running | None:
    """The session work running on the loop now, if any."""
    current = _running
    if current is None:
        return None
    sid, name, started_at = current
    if not isinstance(name, str):
        from session_monitor.client.cost import qualname

        name = qualname(name)
    return (sid, name, started_at)
