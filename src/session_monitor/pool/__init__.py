"""A process-wide worker pool shared by Panel sessions, with per-session cancellation.

::

    from session_monitor import SessionClient, pool

    tracker = SessionClient.get_tracker(app_name="reports")
    jobs = pool.for_session(tracker)          # this session's handle on the shared pool
    result = await jobs.run(crunch, 42)       # crunch: a function of an importable module

One pool (aiomultiprocess worker processes, created at first use) serves every session of every
app in the process; each session that uses it holds one reference. When a session is killed or
ends, its ``on_kill`` releases its reference: its jobs are cancelled, and no other session's. When
the last reference goes (the last session left, or a kill-all killed them all), or at process exit,
the pool is shut down: every worker stopped and reaped. The next session that needs a pool starts
a new one. A kill-all of one app therefore never stops another app's jobs in the same process.

A cancelled job's caller gets :class:`JobCancelled` at once (its ``await`` never hangs), and the
job's code is stopped within ``grace_s + kill_after_s``:

1. cooperative: the job sees its :class:`CancelToken` (``current_token()``) within ``grace_s``
   (0.25 s): ``token.check()``, ``token.cancelled``, ``token.sleep()``, ``await token.async_sleep()``;
2. forced: otherwise the pool signals the worker, which raises :class:`JobInterrupted` into the job's
   Python code (a worker this happened to is replaced afterwards), or cancels the job's asyncio task if
   it is awaiting;
3. last resort: a job still running ``kill_after_s`` (0.5 s) later (stuck in C code) has its worker
   killed and replaced.

Each worker runs one job at a time, so stopping a worker never stops another session's job. A job
author must: define the job in an importable module (never in the served script), make its arguments
and result picklable, and clean up in ``finally`` (``JobInterrupted`` is a ``BaseException``). Checking
the token is optional but keeps the worker (and its warm state) alive.

State lives in an imported module (:mod:`session_monitor.pool.jobs`), never in the served script:
Panel clears a served script's globals when its session is torn down, and the callbacks that release
a session run after that.

The package's modules: :mod:`~session_monitor.pool.jobs` (the session-facing API above),
:mod:`~session_monitor.pool.engine` (one generation of workers and how jobs are stopped),
:mod:`~session_monitor.pool.worker` (what runs inside a worker process) and
:mod:`~session_monitor.pool.examples` (jobs for the example apps, the tests and the benchmark). This
``__init__`` imports only the worker side; the rest loads at the first use of a name from ``jobs``,
so a worker process, which imports ``session_monitor.pool.worker``, never imports the client agent,
httpx, Panel or Bokeh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from session_monitor.errors import JobCancelled, JobFailed
from session_monitor.pool.worker import CancelToken, JobInterrupted, current_token

if TYPE_CHECKING:
    from session_monitor.pool.jobs import (
        DEFAULT_GRACE_S,
        DEFAULT_KILL_AFTER_S,
        Job,
        PoolStatus,
        SessionJobs,
        configure,
        for_session,
        shutdown,
        status,
    )

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_KILL_AFTER_S",
    "CancelToken",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobInterrupted",
    "PoolStatus",
    "SessionJobs",
    "configure",
    "current_token",
    "for_session",
    "shutdown",
    "status",
]

_FROM_JOBS = frozenset(
    {
        "DEFAULT_GRACE_S",
        "DEFAULT_KILL_AFTER_S",
        "Job",
        "PoolStatus",
        "SessionJobs",
        "configure",
        "for_session",
        "shutdown",
        "status",
    }
)
"""Names loaded from :mod:`session_monitor.pool.jobs` at their first use (it imports the client agent)."""


def __getattr__(name: str) -> Any:
    if name in _FROM_JOBS:
        from session_monitor.pool import jobs

        value = getattr(jobs, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FROM_JOBS})
