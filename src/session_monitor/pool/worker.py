"""Inside the shared pool's worker processes: the cancel token, and how a job is run and stopped.

Every job runs through :func:`run_job` in a worker that runs one job at a time. The parent
process and the workers share three arrays of 64-bit slots (``multiprocessing.RawArray``,
handed to each worker when it is spawned); job ``n`` owns slot ``n % SLOTS``:

- ``cancelled``: holds ``n`` once job ``n`` is cancelled. :class:`CancelToken` reads it (a memory
  read: no IPC, no manager process), so a job may check it as often as it likes.
- ``forced``: holds ``n`` once the job must stop now. The parent then sends :data:`FORCE_SIGNAL`
  to the worker, whose handler raises :class:`JobInterrupted` into the job's code (between two
  Python bytecodes, or out of a ``time.sleep``), or cancels the job's asyncio task if the job is
  awaiting. A worker whose job had the exception raised into it exits afterwards and the pool
  starts a fresh one: an exception thrown into arbitrary code may leave half-changed state behind.
- ``pids``: the worker running job ``n`` (0 when none), for the signal, and for the last
  resort when the job sits in C code that never returns to Python: the parent kills the worker.

Why a signal rather than asking nicely: a job that never checks its token must still stop within
a second. Why one job per worker: ending a worker then stops only that job.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import pickle
import signal
import time
import traceback
from collections.abc import Sequence
from typing import Any

SLOTS = 1 << 16
"""Slots of the shared arrays; job ``n`` uses slot ``n % SLOTS`` (a slot is reused 65,536 jobs later)."""

FORCE_SIGNAL = signal.SIGUSR1
"""Sent by the parent to a worker whose job must stop now; the worker's handler interrupts the job."""

RETIRING = -1
"""Written to a job's ``pids`` slot by a worker that exits after its job was interrupted."""

CHECK_INTERVAL_S = 0.02
"""How often :meth:`CancelToken.sleep` and :meth:`CancelToken.async_sleep` look at the token."""

_cancelled: Sequence[int] | None = None
_forced: Sequence[int] | None = None
_pids: Any = None
_current: tuple[int, asyncio.Task[Any] | None] | None = None
"""The job this worker runs now, and its asyncio task."""
_interrupted: int = 0
"""The job the force handler already acted on (it acts once per job)."""
_raised_into: int = 0
"""The job the force handler raised into: this worker exits after it."""


class JobInterrupted(BaseException):
    """Raised inside a job's code when the job was cancelled.

    Raised by :meth:`CancelToken.check`, :meth:`CancelToken.sleep` and :meth:`CancelToken.async_sleep`,
    and by the pool into a job that did not stop by itself. Like ``KeyboardInterrupt`` it is not an
    ``Exception``, so ``except Exception`` in the job does not swallow it: use ``try``/``finally`` to clean up.
    """


class CancelToken:
    """A job's view of its cancellation; get it with :func:`current_token` inside the job.

    Picklable (it holds only the job's number), valid inside the worker that runs the job.
    """

    __slots__ = ("job_id",)

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"<CancelToken job={self.job_id} cancelled={self.cancelled}>"

    @property
    def cancelled(self) -> bool:
        """``True`` once the job is cancelled (its session killed or ended, or the job cancelled)."""
        flags = _cancelled
        if flags is None:
            raise RuntimeError("a CancelToken is only valid inside a job of session_monitor.pool")
        return flags[self.job_id % SLOTS] == self.job_id

    def check(self) -> None:
        """Raise :class:`JobInterrupted` if the job is cancelled; call it between steps of the work."""
        if self.cancelled:
            raise JobInterrupted(f"job {self.job_id} was cancelled")

    def sleep(self, seconds: float) -> None:
        """``time.sleep(seconds)`` that raises :class:`JobInterrupted` within 20 ms of a cancel."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, CHECK_INTERVAL_S))

    async def async_sleep(self, seconds: float) -> None:
        """``await asyncio.sleep(seconds)`` that raises :class:`JobInterrupted` within 20 ms of a cancel."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, CHECK_INTERVAL_S))


def current_token() -> CancelToken:
    """The cancel token of the job running in this worker; only valid inside a job."""
    current = _current
    if current is None:
        raise RuntimeError("current_token() is only valid inside a job of session_monitor.pool")
    return CancelToken(current[0])


def init_worker(cancelled: Sequence[int], forced: Sequence[int], pids: Any) -> None:
    """Worker start-up (aiomultiprocess ``initializer``): the shared arrays, the force handler, no SIGINT.

    Ctrl-C in a terminal reaches the whole process group: the parent stops its workers itself.
    """
    global _cancelled, _forced, _pids
    _cancelled, _forced, _pids = cancelled, forced, pids
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(FORCE_SIGNAL, _on_force)


def _on_force(_signum: int, _frame: Any) -> None:
    """Interrupt the running job if the parent marked it ``forced``; otherwise nothing (it already ended).

    A job executing right now (its task is the current one: it is computing, or in ``time.sleep``) gets
    :class:`JobInterrupted` raised here. A job awaiting something has its task cancelled instead: raising
    here would land in the event loop's own code and kill the worker.
    """
    global _interrupted, _raised_into
    current, forced = _current, _forced
    if current is None or forced is None:
        return
    job_id, task = current
    if forced[job_id % SLOTS] != job_id or _interrupted == job_id:
        return
    _interrupted = job_id
    try:
        running = asyncio.current_task()
    except RuntimeError:
        running = None
    if task is not None and running is task:
        _raised_into = job_id
        raise JobInterrupted(f"job {job_id} was stopped by the pool")
    if task is not None:
        task.get_loop().call_soon_threadsafe(task.cancel)


async def run_job(job_id: int, payload: bytes) -> tuple[str, Any, str | None, float]:
    """Run one job in this worker: ``("ok", pickled result, None, cpu_s)``, ``("error", pickled exception,
    traceback, cpu_s)`` or ``("cancelled", None, None, cpu_s)``. Never raises, so aiomultiprocess always gets an
    answer. ``cpu_s`` is the CPU time this process spent on the job (it runs one job at a time).

    ``payload`` is the pickled ``(fn, args, kwargs)``: unpickled here, a function that cannot be imported
    in the worker becomes this job's error instead of killing the worker.
    """
    global _current
    slot = job_id % SLOTS
    assert _cancelled is not None and _forced is not None and _pids is not None, "init_worker did not run"
    if _cancelled[slot] == job_id:
        return "cancelled", None, None, 0.0
    outcome: tuple[str, Any, str | None]
    cpu_start = time.process_time()
    try:
        _pids[slot] = os.getpid()
        _current = (job_id, asyncio.current_task())
        if _forced[slot] == job_id:
            raise JobInterrupted
        fn, args, kwargs = pickle.loads(payload)
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        outcome = "ok", pickle.dumps(result), None
    except (JobInterrupted, asyncio.CancelledError):
        outcome = "cancelled", None, None
    except BaseException as exc:
        outcome = "error", _pickled_error(exc), traceback.format_exc()
    finally:
        _current = None
        _pids[slot] = 0
    if _raised_into == job_id:
        # Interrupted from outside its own code: this process may hold half-changed state. The parent
        # already answered the caller; the pool replaces this worker.
        _pids[slot] = RETIRING
        os._exit(0)
    return (*outcome, time.process_time() - cpu_start)


def _pickled_error(exc: BaseException) -> bytes | None:
    try:
        return pickle.dumps(exc)
    except Exception:
        return None
