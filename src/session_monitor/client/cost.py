"""What each session costs the process: wall time of its work on the IOLoop and in threads, callbacks.

A :class:`Meter` per Bokeh session id, fed by the dispatch wrappers (``dispatch.py``) with
``time.perf_counter_ns`` spans. The loop fields are written only by the loop thread (Panel runs every
session of a process on one IOLoop), so they take no lock; thread-pool work, which may run on several
threads at once, is added under the meter's lock. The last minute is a ring of 60 one-second buckets:
a bucket is reset when a new second lands on it, and a sum counts only buckets of the last 60 seconds.

Nothing here imports Panel or Bokeh; the agent thread reads meters with :meth:`Meter.snapshot`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from functools import partial
from typing import Any

WINDOW_S = 60
"""Seconds covered by ``loop_seconds_1m``."""

MAX_NAME = 200
"""Callback names are cut to this length (the server's limit for them)."""

MAX_NAMES_CACHED = 10_000

_NS_PER_S = 1_000_000_000

_names: dict[Any, str] = {}


def _unwrap(fn: Any) -> Any:
    for _ in range(8):
        if isinstance(fn, partial):
            fn = fn.func
            continue
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is None:
            break
        fn = wrapped
    return getattr(fn, "__func__", fn)  # a bound method: its function (hashable, keeps no instance alive)


def qualname(fn: Any) -> str:
    """``module.Qualified.name`` of the function behind ``fn`` (partials and ``functools.wraps`` unwrapped)."""
    target = _unwrap(fn)
    try:
        name = _names.get(target)
    except TypeError:  # unhashable callable
        name, target = None, None
    if name is None:
        qual = getattr(target, "__qualname__", None) or type(target).__qualname__
        module = getattr(target, "__module__", None)
        name = (f"{module}.{qual}" if module else str(qual))[:MAX_NAME]
        if target is not None:
            if len(_names) >= MAX_NAMES_CACHED:
                _names.clear()
            _names[target] = name
    return name


class Meter:
    """The running cost of one session (see the module docstring)."""

    __slots__ = (
        "_bucket_ns",
        "_bucket_sec",
        "callbacks",
        "ended_at",
        "ended_wall",
        "jobs",
        "lock",
        "loop_ns",
        "pool_ns",
        "session_id",
        "slowest",
        "slowest_ns",
    )

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.loop_ns = 0
        self.pool_ns = 0
        self.callbacks = 0
        self.slowest_ns = 0
        self.slowest: Any = None
        """The slowest callback (a callable, named at the next snapshot, or its name)."""
        self._bucket_sec = [0] * WINDOW_S
        self._bucket_ns = [0] * WINDOW_S
        self.lock = threading.Lock()
        self.jobs: dict[int, str] = {}
        """Executor jobs of this session running now: id -> function name."""
        self.ended_at: float | None = None
        """When the session ended (``time.monotonic``), else ``None``."""
        self.ended_wall = ""
        """The same, as ISO 8601 UTC text."""

    def add(self, span_ns: int, end_ns: int, fn: Any, counted: bool = True) -> None:
        """One callback ran ``span_ns`` on the loop thread, ending at ``end_ns`` (``perf_counter_ns``).

        ``counted=False``: a later step of a coroutine callback, already counted once.
        """
        self.loop_ns += span_ns
        self.callbacks += counted
        sec = end_ns // _NS_PER_S
        i = sec % WINDOW_S
        secs = self._bucket_sec
        if secs[i] == sec:
            self._bucket_ns[i] += span_ns
        else:
            secs[i] = sec
            self._bucket_ns[i] = span_ns
        if span_ns > self.slowest_ns:
            self.slowest_ns = span_ns
            self.slowest = fn

    def add_thread(self, span_ns: int, fn: Any) -> None:
        """One job of this session ran ``span_ns`` on a pool thread (any thread: under the lock)."""
        with self.lock:
            self.pool_ns += span_ns
            self.callbacks += 1
            if span_ns > self.slowest_ns:
                self.slowest_ns = span_ns
                self.slowest = fn

    def job_started(self, job_id: int, fn: Any) -> None:
        with self.lock:
            self.jobs[job_id] = qualname(fn)

    def job_done(self, job_id: int) -> None:
        with self.lock:
            self.jobs.pop(job_id, None)

    def loop_ns_window(self, now_ns: int | None = None) -> int:
        """Loop time of the last :data:`WINDOW_S` seconds."""
        sec = (time.perf_counter_ns() if now_ns is None else now_ns) // _NS_PER_S
        return sum(n for s, n in zip(self._bucket_sec, self._bucket_ns, strict=True) if 0 <= sec - s < WINDOW_S)

    def snapshot(self) -> dict[str, Any]:
        """The timing fields of the session's ``cost`` (seconds rounded to the microsecond)."""
        with self.lock:
            slowest = self.slowest
            if slowest is not None and not isinstance(slowest, str):
                slowest = self.slowest = qualname(slowest)  # named once; drops the reference to the callable
            return {
                "loop_seconds_total": round(self.loop_ns / _NS_PER_S, 6),
                "loop_seconds_1m": round(self.loop_ns_window() / _NS_PER_S, 6),
                "pool_thread_seconds": round(self.pool_ns / _NS_PER_S, 6),
                "callbacks_total": self.callbacks,
                "slowest_callback": (
                    None if slowest is None else {"qualname": slowest, "duration_s": round(self.slowest_ns / 1e9, 6)}
                ),
            }


_meters: dict[str, Meter] = {}
_meters_lock = threading.Lock()
_forgotten: OrderedDict[str, None] = OrderedDict()
"""Sessions whose meter was dropped after their end: work still run for them is not metered again."""
MAX_FORGOTTEN = 10_000


def meter(session_id: str) -> Meter:
    """The meter of ``session_id``, created on first use (a detached one for a session already forgotten)."""
    found = _meters.get(session_id)
    if found is None:
        with _meters_lock:
            if session_id in _forgotten:
                return Meter(session_id)  # counted nowhere: the session ended and was checked for leftovers
            found = _meters.setdefault(session_id, Meter(session_id))
    return found


def find(session_id: str) -> Meter | None:
    return _meters.get(session_id)


def meters() -> list[Meter]:
    return list(_meters.values())


def forget(session_id: str) -> None:
    """Drop the meter of an ended session (its leftovers check is done)."""
    with _meters_lock:
        if _meters.pop(session_id, None) is not None:
            _forgotten[session_id] = None
            while len(_forgotten) > MAX_FORGOTTEN:
                _forgotten.popitem(last=False)


def revive(session_id: str) -> None:
    """The session is live again (Bokeh re-created it under its id, or it was tracked again): meter it again."""
    with _meters_lock:
        _forgotten.pop(session_id, None)
    found = _meters.get(session_id)
    if found is not None:
        found.ended_at = None
        found.ended_wall = ""


def mark_ended(session_id: str) -> None:
    """The session ended: its meter stays until the leftovers check (``leftovers.py``) is done with it."""
    found = _meters.get(session_id)
    if found is not None and found.ended_at is None:
        found.ended_wall = datetime.now(UTC).isoformat()
        found.ended_at = time.monotonic()


def reset() -> None:
    """Forget every meter (tests)."""
    with _meters_lock:
        _meters.clear()
        _forgotten.clear()
    _names.clear()
