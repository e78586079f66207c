"""Which session's work the process's IOLoop runs right now: one process-wide "current work" slot.

Panel runs every session of a process on one IOLoop, so at any moment the loop runs the work of at most one
session. The only writers are the wrappers of Bokeh's session dispatch (``dispatch.py``), on the loop thread:
they set the slot around each callback, browser message and locked-document call they time (and around each
step of a coroutine callback), and rename it after the param watcher found inside. The stall watchdog
(``stalls.py``) reads it from its own thread while the loop is blocked, to name the session and function that
block it. The slot is one module attribute swapped whole (a plain tuple), so a reader on another thread sees
either the old or the new value, never a mix.

This module imports nothing of Panel or Bokeh.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

__all__ = ["Work", "clear_running", "rename_running", "running", "set_running"]


class Work(NamedTuple):
    """A session's work the loop is running: for which session, what (a qualified name), since when."""

    session_id: str
    function: str
    started: float
    """:func:`time.monotonic` (the IOLoop's clock) when this callback, or this step of a coroutine, began."""


_running: tuple[str, Any, float] | None = None
"""``(session_id, function, started)``, the function possibly still a callable (named only when read).

A plain tuple, not a :class:`Work`: it is made on every callback, and a named tuple costs several times more.
"""


def set_running(session_id: str, function: str | Any, started: float | None = None) -> None:
    """The loop starts running ``function`` for ``session_id`` (on the loop thread only).

    ``function`` may be the callable itself: it is named only when :func:`running` is called (the watchdog,
    during a stall), which keeps naming off the path of every callback.
    """
    global _running
    _running = (session_id, function, time.monotonic() if started is None else started)


def rename_running(function: str | Any) -> None:
    """The work in progress is better named ``function`` (a handler found inside it); its start is kept."""
    global _running
    current = _running
    if current is not None:
        _running = (current[0], function, current[2])


def clear_running() -> None:
    """The work :func:`set_running` marked returned (or yielded: a coroutine's step ended)."""
    global _running
    _running = None


def running() -> Work | None:
    """The session work running on the loop now, if any (callable from any thread)."""
    current = _running
    if current is None:
        return None
    sid, function, started = current
    if not isinstance(function, str):
        from session_monitor.client.cost import qualname

        function = qualname(function)
    return Work(sid, function, started)
