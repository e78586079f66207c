"""Which session's work runs: Bokeh's and Panel's dispatch of a session's work, timed per session.

Everything Bokeh runs for one session's document goes through a few ``ServerSession`` methods, and
those are wrapped once per process (:func:`install`):

- ``with_document_locked``: every document callback (next tick, timeout, periodic; Panel's
  ``state.execute``, its debounced change events and async handlers all land here), with the lock held;
- ``_wrap_document_callback``: the callbacks marked ``nolock``, which skip the lock;
- ``_handle_patch``, ``_handle_push``, ``_handle_pull``: a browser's messages: events and property
  changes, and the synchronous Python callbacks they trigger (a button's ``on_click`` without threads).

Each is timed with ``perf_counter_ns`` on the loop; a coroutine's result is timed step by step
(:class:`_TimedSteps`), so time spent awaiting counts for nobody. These are the only wrappers of
Bokeh's dispatch: they also set the "current work" slot (``loop.py``) while a session's work runs, which
the stall watchdog (``stalls.py``) reads to name the blocking session and function. Jobs a session submits to a
``ThreadPoolExecutor`` (Panel's ``--num-threads`` pool) are timed on their thread through the
observer of ``threads.py``. Inside a dispatch, param watchers (``on_click``, ``param.watch``,
``param.depends`` handlers) are timed too, only to name the work: the longest one names the
dispatch (``ServerSession._handle_patch`` tells an operator nothing).
"""

from __future__ import annotations

import inspect
import itertools
import threading
import weakref
from collections.abc import Callable, Generator
from functools import wraps
from time import monotonic, perf_counter_ns
from typing import Any

import param.parameterized
from bokeh.document import Document
from bokeh.server import session as bokeh_session
from bokeh.server.session import ServerSession

from session_monitor.client import cost, threads
from session_monitor.client.loop import clear_running, rename_running, set_running


class _Local(threading.local):
    frame: list[Any] | None = None
    """``[callable, ns]`` of the longest param watcher inside the dispatch running on this thread."""
    sid: str | None = None
    """The session of that dispatch."""


_local = _Local()
_meters = cost._meters
_installed = False
_install_lock = threading.Lock()
_job_ids = itertools.count(1)

_documents: weakref.WeakValueDictionary[str, Document] = weakref.WeakValueDictionary()
"""The document of each Bokeh session of this process, by session id (kept only while Bokeh keeps it)."""


def document(session_id: str) -> Document | None:
    return _documents.get(session_id)


def current_session() -> str | None:
    """The session whose dispatch runs on this thread (a threads finder: jobs submitted there carry it)."""
    return _local.sid


def _run(sid: str, fn: Any, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``call`` as ``sid``'s work on the loop, timed; ``fn`` names it. A coroutine result is timed by steps."""
    result = _step(sid, fn, call, *args, **kwargs)
    if result is not None and inspect.isawaitable(result):
        return _TimedSteps(result, sid, fn)
    return result


def _step(sid: str, fn: Any, call: Callable[..., Any], *args: Any, _first: bool = True, **kwargs: Any) -> Any:
    """Run ``call`` as ``sid``'s work on the loop, timed (``_first``: a new callback, not a coroutine's next step).

    On every callback's path: kept to attribute reads, two clock reads and a few integer operations.
    """
    local = _local
    if local.frame is not None:  # already inside a timed dispatch of this thread
        return call(*args, **kwargs)
    meter = _meters.get(sid) or cost.meter(sid)
    frame: list[Any] = [None, 0]
    local.frame = frame
    local.sid = sid
    set_running(sid, fn, monotonic())
    start = perf_counter_ns()
    try:
        return call(*args, **kwargs)
    finally:
        end = perf_counter_ns()
        local.frame = local.sid = None
        clear_running()
        meter.add(end - start, end, fn if frame[0] is None else frame[0], _first)


class _TimedSteps:
    """An awaitable whose every step (``send``/``throw`` into the wrapped one) is timed as the session's work."""

    __slots__ = ("_fn", "_it", "_sid")

    def __init__(self, awaitable: Any, sid: str, fn: Any) -> None:
        self._it = awaitable.__await__()
        self._sid = sid
        self._fn = fn

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def __iter__(self) -> _TimedSteps:
        return self

    def __next__(self) -> Any:
        return _step(self._sid, self._fn, self._it.send, None, _first=False)

    def send(self, value: Any) -> Any:
        return _step(self._sid, self._fn, self._it.send, value, _first=False)

    def throw(self, *exc: Any) -> Any:
        return _step(self._sid, self._fn, self._it.throw, *exc, _first=False)

    def close(self) -> None:
        self._it.close()


def _timed_locked(raw: Callable[..., Any], *, named_by_arg: bool) -> Callable[..., Any]:
    """``raw`` (an undecorated ``ServerSession`` method) timed, then given Bokeh's document lock again."""

    @wraps(raw)
    def method(self: ServerSession, *args: Any, **kwargs: Any) -> Any:
        fn = args[0] if named_by_arg and args else raw
        return _run(str(self.id), fn, raw, self, *args, **kwargs)

    return bokeh_session._needs_document_lock(method)


def _run_job(key: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A ``ThreadPoolExecutor`` job submitted by session ``key``, run on its thread (the threads observer)."""
    meter = cost.meter(key)
    job_id = next(_job_ids)
    meter.job_started(job_id, fn)
    frame: list[Any] = [None, 0]
    previous = _local.frame
    _local.frame = frame
    start = perf_counter_ns()
    try:
        return fn(*args, **kwargs)
    finally:
        span = perf_counter_ns() - start
        _local.frame = previous
        meter.job_done(job_id)
        meter.add_thread(span, fn if frame[0] is None else frame[0])


_originals: list[tuple[Any, str, Any]] = []
"""``(owner, name, original)`` of every attribute :func:`install` replaced."""


def _replace(owner: Any, name: str, value: Any) -> None:
    _originals.append((owner, name, owner.__dict__[name]))
    setattr(owner, name, value)


def uninstall() -> None:
    """Put back what :func:`install` wrapped (the benchmark's untracked runs, tests)."""
    global _installed
    with _install_lock:
        while _originals:
            owner, name, original = _originals.pop()
            setattr(owner, name, original)
        threads.observe_jobs(None)
        threads.remove_finder(current_session)
        _installed = False


def install() -> None:
    """Wrap Bokeh's session dispatch, param's watcher calls and executor jobs (once per process)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
    cls = ServerSession
    for name in ("_handle_patch", "_handle_push", "_handle_pull"):
        _replace(cls, name, _timed_locked(getattr(cls, name).__wrapped__, named_by_arg=False))
    _replace(
        cls,
        "with_document_locked",
        _timed_locked(cls.with_document_locked.__wrapped__, named_by_arg=True),  # type: ignore[attr-defined]
    )

    original_wrap = cls._wrap_document_callback

    def _wrap_document_callback(self: ServerSession, callback: Any) -> Any:
        if not getattr(callback, "nolock", False):
            return original_wrap(self, callback)
        sid = str(self.id)

        @wraps(callback)
        def nolock_callback(*args: Any, **kwargs: Any) -> Any:
            return _run(sid, callback, callback, *args, **kwargs)

        return nolock_callback

    _replace(cls, "_wrap_document_callback", _wrap_document_callback)

    original_init = cls.__init__

    @wraps(original_init)
    def __init__(self: ServerSession, session_id: Any, document: Document, *args: Any, **kwargs: Any) -> None:
        _documents[str(session_id)] = document
        cost.revive(str(session_id))
        original_init(self, session_id, document, *args, **kwargs)

    _replace(cls, "__init__", __init__)

    original_destroy = cls.destroy

    @wraps(original_destroy)
    def destroy(self: ServerSession) -> None:
        cost.mark_ended(str(self.id))
        original_destroy(self)

    _replace(cls, "destroy", destroy)

    parameters = param.parameterized.Parameters
    original_execute = parameters._execute_watcher

    @wraps(original_execute)
    def _execute_watcher(self_: Any, watcher: Any, events: Any) -> Any:
        frame = _local.frame
        if frame is None:
            return original_execute(self_, watcher, events)
        if frame[0] is None and _local.sid is not None:
            rename_running(watcher.fn)
        start = perf_counter_ns()
        try:
            return original_execute(self_, watcher, events)
        finally:
            span = perf_counter_ns() - start
            if span > frame[1]:
                frame[0], frame[1] = watcher.fn, span

    _replace(parameters, "_execute_watcher", _execute_watcher)
    threads.add_finder(current_session)
    threads.observe_jobs(_run_job)
    threads.install()
