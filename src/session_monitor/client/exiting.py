"""Process exit: hooks run before the agent's last sync, at interpreter exit and on SIGTERM.

The order at exit: :func:`run_exit` runs the *first* steps (the agent holds changes back, so every
session's end is in its last sync), then the :func:`on_exit` hooks (trackers end their sessions as
``process_exit``, the worker pool shuts down), then the *last* steps (the agent's last sync).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import sys
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
    """Make SIGTERM exit through ``sys.exit`` so the exit hooks run (its default kills without them).

    Called when the agent starts, on whatever thread made the first tracker. ``signal.signal`` works on
    the main thread only, so the handler is normally in place already: installed when this module was
    imported (on the main thread, as an app's imports are), idle until now. Imported on another thread,
    the installation is handed to the main thread's Tornado/Panel IOLoop when one runs there.

    A handler someone else installed (Tornado, Panel, Bokeh, uvicorn, the program) is never replaced:
    theirs runs, and the normal exit it leads to runs the hooks anyway. One installed over ours may call
    ours in turn (uvicorn re-raises the signal once it restored ours): ours then exits through the hooks.
    """
    global _armed
    _armed = True
    if threading.current_thread() is threading.main_thread():
        _install()
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # ours already, or someone else's
    loop = _main_thread_loop()
    if loop is None:
        logger.info(
            "session monitor: SIGTERM will not end this process's sessions at once (the first tracker was made "
            "off the main thread, which runs no IOLoop); the server ends them as process_lost"
        )
        return
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
        loop.call_soon_threadsafe(_install)


_armed = False
"""Whether the process has an agent: only then does SIGTERM exit through the hooks."""


def _install() -> None:
    """Install the handler on the main thread, unless a handler of someone else's is there."""
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main thread or interpreter, or no signals here
        pass


def _main_thread_loop() -> Any:
    """The asyncio loop a Tornado IOLoop (Panel's, Bokeh's) runs on the main thread, or ``None``."""
    ioloop = sys.modules.get("tornado.ioloop")
    registry = getattr(getattr(ioloop, "IOLoop", None), "_ioloop_for_asyncio", None)
    if not registry:
        return None
    main = threading.main_thread().ident
    for loop in list(registry):
        if getattr(loop, "_thread_id", None) == main and loop.is_running():
            return loop
    return None


NOTICE_MAX_S = 2.0
"""Longest SIGTERM waits for the pages to be told "this server is restarting" before the process exits."""

Notice = Callable[[Callable[[], None]], None]
"""Started on the main thread's loop at SIGTERM; calls its argument once the pages were told (or gave up)."""

_notice: Notice | None = None
_terminating = False


def on_sigterm_notice(notice: Notice) -> None:
    """At SIGTERM, run ``notice`` on the main thread's IOLoop first, and exit once it is done (at most
    :data:`NOTICE_MAX_S`): Panel's binding tells every open page the server is restarting."""
    global _notice
    _notice = notice


def _exit_on_loop(signum: int) -> None:
    """Raised from a loop callback, ``SystemExit`` leaves the loop (asyncio re-raises it) and the process exits."""
    raise SystemExit(128 + signum)


def _notify_then_exit(signum: int, then: Callable[[], None] | None = None) -> bool:
    """Start the SIGTERM notice on the main thread's running loop, then exit (or run ``then``: Bokeh's own
    SIGTERM handler); ``False`` when there is no notice or loop to run it on."""
    global _terminating
    loop = _main_thread_loop()
    if _notice is None or _terminating or loop is None:
        return False
    _terminating = True
    notice = _notice
    done = False

    def finish() -> None:
        nonlocal done
        if not done:
            done = True
            if then is not None:
                loop.call_soon(then)
            else:
                loop.call_soon(_exit_on_loop, signum)

    def start() -> None:
        loop.call_later(NOTICE_MAX_S, finish)
        try:
            notice(finish)
        except Exception:
            logger.exception("session monitor: the SIGTERM notice failed")
            finish()

    loop.call_soon_threadsafe(start)
    return True


def take_over_loop_sigterm(loop: Any) -> None:
    """Put the SIGTERM notice in front of a SIGTERM handler set on ``loop`` with ``loop.add_signal_handler``.

    Bokeh's server (``panel serve``) handles SIGTERM that way: it stops the loop at once, and the pages only saw
    their sockets drop. Called on the loop's thread; a no-op without such a handler, or when already done.
    """
    handlers = getattr(loop, "_signal_handlers", None)
    original = handlers.get(signal.SIGTERM) if isinstance(handlers, dict) else None
    callback = getattr(original, "_callback", None)
    if callback is None or getattr(callback, "_session_monitor", False):
        return
    args = tuple(getattr(original, "_args", ()) or ())

    def theirs() -> None:
        callback(*args)

    def ours() -> None:
        if not (_armed and _notify_then_exit(signal.SIGTERM, then=theirs)):
            theirs()

    ours._session_monitor = True  # type: ignore[attr-defined]
    with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, ours)


def _on_sigterm(signum: int, _frame: Any) -> None:
    if _armed:
        if _notify_then_exit(signum):
            return  # the process exits from the loop once the pages were told
        raise SystemExit(128 + signum)
    # No agent in this process: SIGTERM's default action, as if the monitor had never been imported.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)


if threading.current_thread() is threading.main_thread():
    _install()  # idle until an agent starts (see install_sigterm_exit)
