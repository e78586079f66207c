"""Process exit: hooks run before the agent's last sync, at interpreter exit and on SIGTERM.

The order at exit: :func:`run_exit` runs the *first* steps (the agent holds changes back, so every
session's end is in its last sync), then the :func:`on_exit` hooks (trackers end their sessions as
``process_exit``, the worker pool shuts down), then the *last* steps (the agent's last sync).
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

Hook = Callable[[], None]

_first: list[Hook] = []
_hooks: list[Hook] = []
_last: list[Hook] = []


def on_exit(hook: Hook) -> None:
    """Run ``hook`` at process exit, before the agent's last sync."""
    _hooks.append(hook)


def around_exit_hooks(first: Hook, last: Hook) -> None:
    """Run ``first`` before every :func:`on_exit` hook and ``last`` after them (the agent's own steps)."""
    _first.append(first)
    _last.append(last)


def run_exit() -> None:
    """The exit sequence (see the module docstring); one failing step does not stop the others."""
    for hook in [*_first, *_hooks, *_last]:
        try:
            hook()
        except Exception:
            logger.exception("session monitor exit hook failed")


def register_at_exit() -> None:
    """Run :func:`run_exit` at interpreter exit, before ``concurrent.futures`` shuts its thread pools down.

    The last sync may need a new connection, and asyncio resolves a host name on the loop's thread pool:
    from a plain ``atexit`` hook (run after the pools are shut down) that fails with "cannot schedule new
    futures after shutdown", and the sessions are left to expire instead of ending as ``process_exit``.
    ``threading._register_atexit`` hooks run in reverse order, so ours, registered later, runs first.
    """
    import concurrent.futures.thread  # noqa: F401  (registers the pools' own exit hook before ours)

    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(run_exit)
    else:
        register(run_exit)


def install_sigterm_exit() -> None:
    """Make SIGTERM exit through ``sys.exit`` so the exit hooks run (its default kills without them)."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        pass


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)
