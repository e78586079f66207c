"""Which session a thread works for, carried into threads and executor jobs a session starts.

Panel knows the current session only on the threads it runs session code on; a
``threading.Thread`` started from a button callback (what the prototype's own
example app does) sees none, and the prototype created a new, orphan session on
every click. As OpenTelemetry's threading instrumentation does for its context,
``Thread.start`` and ``ThreadPoolExecutor.submit`` are wrapped once so the
starter's session key travels with the work.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_ATTR = "_session_monitor_key"
_local = threading.local()
_installed = False
_install_lock = threading.Lock()

SessionKeyFinder = Callable[[], str | None]
_finders: list[SessionKeyFinder] = []

JobObserver = Callable[[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
"""Runs a job submitted by session ``key``: ``observer(key, fn, args, kwargs)`` calls ``fn`` (cost accounting)."""
_observer: JobObserver | None = None


def observe_jobs(observer: JobObserver | None) -> None:
    """Run every executor job a session submits through ``observer`` (``None``: directly)."""
    global _observer
    _observer = observer


def current_key() -> str | None:
    """The session key of the calling thread: a Panel session's own, or one carried from its starter."""
    for finder in _finders:
        key = finder()
        if key is not None:
            return key
    carried = getattr(_local, "key", None)
    if carried is not None:
        return str(carried)
    key = getattr(threading.current_thread(), _ATTR, None)
    return None if key is None else str(key)


def add_finder(finder: SessionKeyFinder) -> None:
    """Register a way to find the current session (the Panel integration adds one)."""
    if finder not in _finders:
        _finders.append(finder)


@contextlib.contextmanager
def untracked() -> Iterator[None]:
    """Threads started inside this block carry no session: pool workers and the agent serve every session."""
    previous = getattr(_local, "untracked", False)
    _local.untracked = True
    try:
        yield
    finally:
        _local.untracked = previous


def remove_finder(finder: SessionKeyFinder) -> None:
    """Forget a finder added with :func:`add_finder` (tests)."""
    if finder in _finders:
        _finders.remove(finder)


def install() -> None:
    """Wrap ``Thread.start`` and ``ThreadPoolExecutor.submit`` (once per process)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
    original_start = threading.Thread.start
    original_submit = ThreadPoolExecutor.submit

    @functools.wraps(original_start)
    def start(self: threading.Thread) -> None:
        if getattr(self, _ATTR, None) is None and not getattr(_local, "untracked", False):
            key = current_key()
            if key is not None:
                setattr(self, _ATTR, key)
        original_start(self)

    def submit(self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        key = current_key()
        if key is None:
            with untracked():  # a worker started here must not keep this job's session for later jobs
                return original_submit(self, fn, *args, **kwargs)

        def carried(*a: Any, **kw: Any) -> Any:
            previous = getattr(_local, "key", None)
            _local.key = key
            try:
                observer = _observer
                return fn(*a, **kw) if observer is None else observer(key, fn, a, kw)
            finally:
                _local.key = previous

        with untracked():
            return original_submit(self, carried, *args, **kwargs)

    threading.Thread.start = start  # type: ignore[method-assign]
    functools.update_wrapper(submit, original_submit)  # type: ignore[arg-type]
    ThreadPoolExecutor.submit = submit  # type: ignore[assignment]


def by_key() -> dict[str, list[threading.Thread]]:
    """The live threads that carry a session key, by key (one pass over ``threading.enumerate()``)."""
    found: dict[str, list[threading.Thread]] = {}
    for thread in threading.enumerate():
        key = getattr(thread, _ATTR, None)
        if key is not None and thread.is_alive():
            found.setdefault(str(key), []).append(thread)
    return found


def target_of(thread: threading.Thread) -> Any:
    """What ``thread`` runs: its ``target``, or the ``run`` method of its class."""
    target = getattr(thread, "_target", None)
    return target if target is not None else type(thread).run
