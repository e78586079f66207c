"""Which session's work the process's IOLoop is running right now: one process-wide slot.

Panel runs every session of a process on one IOLoop, so at any moment the loop runs the work of at most
one session. The code that dispatches a session's callbacks sets :data:`running` around each one (and
around each step of a coroutine callback: :class:`ForSession`); the stall watchdog reads it from its own
thread while the loop is blocked, to name the session that blocks it. Only the loop thread writes it;
a reader sees either the old or the new :class:`Work` (one attribute, swapped whole).

This module imports nothing of Panel or Bokeh: ``client/panel.py`` installs the dispatch hook.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")

__all__ = ["ForSession", "Work", "call_for", "call_named", "enter", "leave", "qualname", "running"]


class Work(NamedTuple):
    """A callback the loop is running: for which session (``None``: none known), what, since when.

    A named tuple: made on every callback, it must cost next to nothing (a frozen dataclass cost 1 µs).
    """

    session_id: str | None
    function: str
    started: float
    """``time.monotonic()`` when this callback (or this step of a coroutine) began."""


_monotonic = time.monotonic

running: Work | None = None
"""The work the IOLoop runs now, or ``None`` between callbacks (or for work of no known session)."""


def enter(session_id: str | None, function: str) -> Work | None:
    """Mark ``function`` of ``session_id`` as running on the loop; returns what was running (for :func:`leave`)."""
    global running
    previous = running
    running = Work(session_id, function, _monotonic())
    return previous


def leave(previous: Work | None) -> None:
    """The callback :func:`enter` marked returned: put back what ran before it (usually nothing)."""
    global running
    running = previous


def qualname(func: Any) -> str:
    """``module.Class.method`` of a callable, through ``functools.partial``, ``functools.wraps`` and bound methods."""
    for _ in range(20):  # a cycle of __wrapped__ must not hang the loop
        if isinstance(func, functools.partial):
            func = func.func
        elif getattr(func, "__wrapped__", None) is not None:
            func = func.__wrapped__
        else:
            break
    func = getattr(func, "__func__", func)
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    module = getattr(func, "__module__", None)
    return f"{module}.{name}" if module else str(name)


def call_for(session_id: str | None, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``func`` marked as ``session_id``'s work; an awaitable result is marked at each of its steps."""
    return call_named(session_id, qualname(func), func, *args, **kwargs)


def call_named(session_id: str | None, name: str, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """:func:`call_for`, naming the work ``name`` (a wrapper running the callback the name is of)."""
    global running
    previous = running
    running = Work(session_id, name, _monotonic())
    try:
        result = func(*args, **kwargs)
    finally:
        running = previous
    if result is not None and inspect.isawaitable(result):
        return ForSession(result, session_id, name)  # type: ignore[return-value]
    return result


class ForSession:
    """An awaitable that marks each step of the awaitable it wraps as ``session_id``'s work.

    A coroutine callback runs in steps, between which the loop runs other sessions' work: the slot is
    set only while one of its own steps runs.
    """

    __slots__ = ("_awaitable", "function", "session_id")

    def __init__(self, awaitable: Awaitable[Any], session_id: str | None, function: str) -> None:
        self._awaitable = awaitable
        self.session_id = session_id
        self.function = function

    def __await__(self) -> Generator[Any, Any, Any]:
        steps = self._awaitable.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            previous = enter(self.session_id, self.function)
            try:
                yielded = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                return stop.value
            finally:
                leave(previous)
            try:
                value, error = (yield yielded), None
            except BaseException as exc:  # a cancellation or close thrown into us goes on to the wrapped one
                value, error = None, exc
