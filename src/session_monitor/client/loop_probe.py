"""Loop health of a Panel process: a probe on its IOLoop, the busy share, and Panel's thread pool.

- **Lag**: a callback scheduled every :data:`PROBE_INTERVAL_S` (100 ms) records how late it ran
  (``loop.time()`` against the time it was due). The loop thread only appends one float per probe; the
  agent thread turns them into p50, p99, max and histogram buckets once per sync interval.
- **Busy share**: the share of wall time the loop was not waiting in its selector's ``select()``. The
  asyncio selector event loop (the one Tornado runs on) calls ``self._selector.select(timeout)`` once per
  iteration; the probe times that call. Idle is exactly "blocked in select with nothing to do", so
  callbacks that block without using CPU (``time.sleep``, a synchronous query) count as busy, which CPU
  time would miss. ``_selector`` is a private attribute of asyncio's ``BaseSelectorEventLoop`` (stable
  since 3.4); on another loop (uvloop, Proactor) the busy share is simply not reported.
- **Thread pool** (``panel serve --num-threads N``): queue depth and busy threads of Panel's executor,
  read from ``ThreadPoolExecutor``'s private ``_work_queue``, ``_threads`` and ``_idle_semaphore``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from session_monitor.protocol import LOOP_LAG_BUCKETS_S

logger = logging.getLogger(__name__)

PROBE_INTERVAL_S = 0.1
"""The probe runs this often on the IOLoop."""

MAX_SAMPLES = 100_000
"""Lag samples kept between two snapshots (an agent that cannot sync for hours stops adding)."""

PoolFinder = Callable[[], ThreadPoolExecutor | None]


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0-100) of an ordered, non-empty list."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def buckets_of(lags_s: list[float]) -> list[int]:
    """Counts per bucket of :data:`LOOP_LAG_BUCKETS_S` (not cumulative), the last one for beyond."""
    counts = [0] * (len(LOOP_LAG_BUCKETS_S) + 1)
    for lag in lags_s:
        for i, bound in enumerate(LOOP_LAG_BUCKETS_S):
            if lag <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    return counts


def pool_stats(executor: ThreadPoolExecutor | None) -> dict[str, int] | None:
    """Size, queued jobs and busy threads of a ``ThreadPoolExecutor``; ``None`` without one."""
    if executor is None:
        return None
    try:
        queue = int(executor._work_queue.qsize())
        threads = len(executor._threads)
        idle = int(executor._idle_semaphore._value)
        size = int(executor._max_workers)
    except Exception:  # another executor class, or CPython changed its internals
        return None
    # A worker counts itself idle once it finished a job; jobs still queued mean none is idle.
    busy = threads if queue else max(0, threads - idle)
    return {"pool_size": size, "pool_queue": queue, "pool_busy": busy}


class LoopProbe:
    """The probe on one asyncio loop. :meth:`start` on the loop's thread; :meth:`snapshot` from any thread.

    ``due`` (``loop.time()`` the next probe is due) and ``thread_id`` are what the stall watchdog reads.
    ``on_late(due, ran_at)`` is called on the loop when a probe ran ``late_after_s`` or more after it was due.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        interval_s: float = PROBE_INTERVAL_S,
        pool: PoolFinder | None = None,
        late_after_s: float = math.inf,
        on_late: Callable[[float, float], None] | None = None,
    ) -> None:
        self.loop = loop
        self.interval_s = interval_s
        self.pool = pool
        self.late_after_s = late_after_s
        self.on_late = on_late
        self.thread_id: int | None = None
        self.due: float | None = None
        self.probes = 0
        self._lags: list[float] = []
        self._handle: asyncio.TimerHandle | None = None
        self._idle_s = 0.0
        self._select_since: float | None = None
        self._busy_measured = False
        self._unwrap: Callable[[], None] | None = None
        self._last_at = time.monotonic()
        self._last_idle_s = 0.0
        self.stopped = False

    # -- loop thread ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start probing (call on the loop's thread, or before the loop runs in this thread)."""
        self.thread_id = threading.get_ident()
        self._busy_measured = self._time_selector()
        self._last_at = time.monotonic()
        self._last_idle_s = self._idle_total()
        self._schedule(self.loop.time())

    def _schedule(self, now: float) -> None:
        self.due = now + self.interval_s
        self._handle = self.loop.call_at(self.due, self._probe)

    def _probe(self) -> None:
        now = self.loop.time()
        due = self.due if self.due is not None else now
        lag = now - due if now > due else 0.0
        if len(self._lags) < MAX_SAMPLES:
            self._lags.append(lag)
        self.probes += 1
        if self.stopped:
            return
        self._schedule(now)
        if lag >= self.late_after_s and self.on_late is not None:
            try:
                self.on_late(due, now)
            except Exception:
                logger.exception("loop probe: stall bookkeeping failed")

    def _time_selector(self) -> bool:
        selector = getattr(self.loop, "_selector", None)
        original = getattr(selector, "select", None)
        if selector is None or original is None:
            logger.info("loop probe: %s has no selector to time; busy share not measured", type(self.loop).__name__)
            return False
        clock = time.monotonic

        def select(timeout: float | None = None) -> Any:
            self._select_since = clock()
            try:
                return original(timeout)
            finally:
                since, self._select_since = self._select_since, None
                if since is not None:
                    self._idle_s += clock() - since

        selector.select = select

        def unwrap() -> None:
            with contextlib.suppress(AttributeError):
                del selector.select  # the instance attribute: the class's method shows again

        self._unwrap = unwrap
        return True

    def stop(self) -> None:
        """Stop probing (on the loop thread) and give the selector its own ``select`` back."""
        self.stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.due = None
        if self._unwrap is not None:
            self._unwrap()
            self._unwrap = None

    # -- any thread --------------------------------------------------------------------------------

    def _idle_total(self) -> float:
        idle = self._idle_s
        since = self._select_since
        return idle + (time.monotonic() - since if since is not None else 0.0)

    def running(self) -> bool:
        """Whether the loop is running (a blocked loop is running; a stopped or closed one is not)."""
        return not self.stopped and self.due is not None and self.loop.is_running() and not self.loop.is_closed()

    def snapshot(self) -> dict[str, Any]:
        """Loop health since the previous snapshot (the ``LoopHealth`` wire model), and start a new interval."""
        lags, self._lags = self._lags, []
        now = time.monotonic()
        interval_s = max(0.0, now - self._last_at)
        idle = self._idle_total()
        busy: float | None = None
        if self._busy_measured and interval_s > 0:
            busy = min(1.0, max(0.0, 1.0 - (idle - self._last_idle_s) / interval_s))
        self._last_at, self._last_idle_s = now, idle
        ordered = sorted(lags)
        waiting = self.loop.time() - self.due if self.due is not None and self.running() else 0.0
        worst = max([*ordered[-1:], waiting, 0.0])
        health: dict[str, Any] = {
            "interval_s": round(interval_s, 3),
            "probes": len(ordered),
            "lag_p50_ms": round(percentile(ordered, 50) * 1000, 3) if ordered else None,
            "lag_p99_ms": round(percentile(ordered, 99) * 1000, 3) if ordered else None,
            "lag_max_ms": round(worst * 1000, 3) if ordered or waiting > 0 else None,
            "lag_sum_ms": round(sum(ordered) * 1000, 3),
            "lag_buckets": buckets_of(ordered),
            "busy": None if busy is None else round(busy, 4),
        }
        pool = pool_stats(self.pool() if self.pool is not None else None)
        if pool is not None:
            health.update(pool)
        return health
