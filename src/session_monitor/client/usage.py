"""The cost fields of each live session and the leftovers of ended ones, gathered for the agent's syncs.

Bokeh-aware (it reads documents), so the agent only calls it through :class:`Usage`, which the Panel
integration hands to the agent (``Agent.use``). Timing comes from the meters (``cost.py``); document
size from ``docsize.py`` (off the loop, time-bounded); threads from ``threads.py``; periodic callbacks
from each document's ``session_callbacks``; pool jobs from the executor jobs in flight and from
``session_monitor.pool`` when it runs.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bokeh.server.callbacks import PeriodicCallback

from session_monitor.client import cost, dispatch, threads
from session_monitor.client.docsize import Sizer
from session_monitor.client.leftovers import LeftoverWatch

if TYPE_CHECKING:
    from session_monitor.client.sessions import SessionTable

TIMINGS_EVERY_S = 1.0
"""Between full cost measurements, how often a session's timing is looked at (sent if it grew by
:data:`~session_monitor.client.sessions.TIMING_CHANGE_S`): a blocking callback shows within a second or so."""

TIMING_FIELDS = ("loop_seconds_total", "loop_seconds_1m", "pool_thread_seconds", "callbacks_total", "slowest_callback")


def periodic_callbacks(session_id: str) -> list[Any]:
    """The callables of the periodic callbacks on the session's document (none once it is gone)."""
    doc = dispatch.document(session_id)
    if doc is None:
        return []
    for _ in range(3):
        try:
            found = [cb for cb in list(doc.callbacks._session_callbacks) if isinstance(cb, PeriodicCallback)]
        except RuntimeError:  # the loop changed the set meanwhile: read it again
            continue
        return [getattr(cb, "_callback", None) or cb.callback for cb in found]
    return []


def _pool_engine() -> Any:
    jobs_module = sys.modules.get("session_monitor.pool.jobs")
    engine = getattr(jobs_module, "_engine", None)
    return None if engine is None or engine.closed else engine


def pool_cpu_seconds() -> dict[str, float]:
    """CPU seconds of each session's finished ``session_monitor.pool`` jobs (only if the pool is in use)."""
    engine = _pool_engine()
    if engine is None:
        return {}
    with engine.lock:
        return dict(engine.cpu_s)


def pool_jobs() -> dict[str, list[Any]]:
    """The functions of running ``session_monitor.pool`` jobs by session key (only if the pool is in use)."""
    engine = _pool_engine()
    if engine is None:
        return {}
    found: dict[str, list[Any]] = {}
    for job in list(engine.jobs.values()):
        if job.ended_at is None:
            found.setdefault(job.session_key, []).append(job.function or f"pool job {job.job_id}")
    return found


class Usage:
    """What the agent asks for: :meth:`costs` once per sync interval, :meth:`timings` in between."""

    def __init__(self) -> None:
        self.sizer = Sizer()
        self.leftovers = LeftoverWatch(periodic_callbacks, pool_jobs)
        self._costs_at = float("-inf")
        self._timings_at = float("-inf")
        self._leftovers_at = float("-inf")

    async def refresh(self, sessions: SessionTable, now: float, *, due: bool, interval_s: float) -> None:
        """On the agent's loop: every cost field once per sync interval (off the loop), timings at most every
        second, leftovers every second (``sessions.facts_changed`` when they changed)."""
        if due or now - self._costs_at >= interval_s:
            self._costs_at = self._timings_at = now
            ids = list(sessions.records)
            sessions.apply_costs(await asyncio.to_thread(self.costs, ids))
        elif now - self._timings_at >= TIMINGS_EVERY_S:
            self._timings_at = now
            sessions.apply_costs(self.timings(list(sessions.records)), timings_only=True)
        if now - self._leftovers_at >= TIMINGS_EVERY_S:
            self._leftovers_at = now
            if self.leftovers.check():
                sessions.facts_changed = True

    def timings(self, session_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The timing fields only, of the sessions that have a meter (cheap: no document is read)."""
        out: dict[str, dict[str, Any]] = {}
        for sid in session_ids:
            meter = cost.find(sid)
            if meter is not None:
                out[sid] = meter.snapshot()
        return out

    def costs(self, session_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Every cost field of each session (document sizes measured within the sizer's budget)."""
        now = datetime.now(UTC).isoformat()
        docs = {sid: doc for sid in session_ids if (doc := dispatch.document(sid)) is not None}
        sizes = self.sizer.measure(docs)
        by_key = threads.by_key()
        pool = pool_jobs()
        cpu = pool_cpu_seconds()
        out: dict[str, dict[str, Any]] = {}
        for sid in session_ids:
            meter = cost.find(sid)
            timing = meter.snapshot() if meter is not None else _no_timing()
            if meter is not None:
                with meter.lock:
                    executor_jobs = len(meter.jobs)
            else:
                executor_jobs = 0
            size = sizes.get(sid)
            out[sid] = {
                **timing,
                "periodic_callbacks": len(periodic_callbacks(sid)) if sid in docs else 0,
                "doc_models": None if size is None else size.models,
                "doc_data_bytes": None if size is None else size.data_bytes,
                "threads_alive": len(by_key.get(sid, ())),
                "pool_jobs": executor_jobs + len(pool.get(sid, ())),
                "pool_cpu_seconds": round(cpu[sid], 6) if sid in cpu else None,
                "measured_at": now,
            }
        return out


def _no_timing() -> dict[str, Any]:
    return {
        "loop_seconds_total": 0.0,
        "loop_seconds_1m": 0.0,
        "pool_thread_seconds": 0.0,
        "callbacks_total": 0,
        "slowest_callback": None,
    }
