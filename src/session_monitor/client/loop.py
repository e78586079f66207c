"""The process-wide "current work" slot: which session's callback the IOLoop runs right now.

Set and cleared around each callback the dispatch wrappers (``dispatch.py``) time on the loop thread;
a watchdog thread reads it while the loop is blocked to name the session. One slot per process: Panel
serves all its sessions on one IOLoop. Plain assignments of one tuple, so a reader on another thread
sees either the old or the new value, never a mix.
"""

from __future__ import annotations

import time

Running = tuple[str, str, float]
"""``(session_id, qualname, started_at)``, ``started_at`` from :func:`time.monotonic`."""

_running: Running | None = None


def set_running(session_id: str, qualname: str) -> None:
    """The loop starts running ``qualname`` for ``session_id``."""
    global _running
    _running = (session_id, qualname, time.monotonic())


def rename_running(qualname: str) -> None:
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
    return _running
