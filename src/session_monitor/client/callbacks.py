"""The one runner of ``on_kill`` callbacks: each called once, in order; one raising does not stop the others.

Two ways to wait for the async ones, over the same calls (:func:`_called`):

- :func:`await_callbacks`, on the session's own loop (a kill, a lost browser): each async callback is
  awaited before the next one is called;
- :func:`run_callbacks`, from any other code (``stop()``, Panel's destroy hook, process exit): an async
  callback is awaited on a loop of its own, or, on a thread whose loop is running (where ``asyncio.run``
  is refused), becomes a task of that loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger(__name__)

KillCallback = Callable[[], Any]
"""A no-argument callable, sync or async, run once when the session is killed or ends."""

_tasks: set[asyncio.Task[None]] = set()
"""Async callbacks running on their caller's loop (the loop keeps only weak references to tasks)."""

_background: ThreadPoolExecutor | None = None
_background_lock = threading.Lock()


def _called(session_id: str, callbacks: Iterable[KillCallback]) -> Iterator[tuple[KillCallback, Awaitable[Any]]]:
    """Call each callback when the previous one is done; yield the awaitable of each async one."""
    for callback in callbacks:
        try:
            result = callback()
        except Exception:
            logger.exception("session %s: on_kill callback %r failed", session_id, callback)
            continue
        if inspect.isawaitable(result):
            yield callback, result


async def await_callbacks(session_id: str, callbacks: Iterable[KillCallback]) -> None:
    """Run the callbacks on the running loop, awaiting each async one before calling the next."""
    for callback, awaitable in _called(session_id, callbacks):
        try:
            await awaitable
        except Exception:
            logger.exception("session %s: on_kill callback %r failed", session_id, callback)


def run_callbacks(session_id: str, callbacks: Iterable[KillCallback]) -> None:
    """Run the callbacks from code that cannot await (see the module docstring)."""
    for callback, awaitable in _called(session_id, callbacks):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                asyncio.run(_awaited(awaitable))
            except Exception:
                logger.exception("session %s: on_kill callback %r failed", session_id, callback)
            continue
        task = loop.create_task(_awaited(awaitable))
        _tasks.add(task)
        task.add_done_callback(functools.partial(_task_done, session_id, callback))


async def _awaited(awaitable: Awaitable[Any]) -> None:
    await awaitable


def _task_done(session_id: str, callback: KillCallback, task: asyncio.Task[None]) -> None:
    _tasks.discard(task)
    if not task.cancelled() and task.exception() is not None:
        logger.error("session %s: on_kill callback %r failed", session_id, callback, exc_info=task.exception())


def run_in_background(fn: Callable[[], None]) -> None:
    """Run ``fn`` on the one shared callback thread (kills outside Panel must not block the agent's thread)."""
    global _background
    with _background_lock:
        if _background is None:
            _background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="session-monitor-callbacks")
    _background.submit(fn)
