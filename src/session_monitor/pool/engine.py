"""One generation of the shared pool: aiomultiprocess workers, their jobs, and how jobs are stopped.

An engine runs on a thread of its own with its own event loop: aiomultiprocess's ``Pool`` keeps a
task on the loop it was created on, and Panel sessions await from the server's loop, from their
threads, or not at all (``Job.result``). Callers get a ``concurrent.futures.Future`` per job, which
works from any thread and any loop.

A supervisor on that loop, every :data:`TICK_S`, collects results and moves cancelled jobs along:
cancelled → (``grace_s``) signalled → (``kill_after_s``) worker killed. The caller's future is
answered when the job is cancelled, never later: nobody waits on a job that is being stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import multiprocessing.spawn
import os
import pickle
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import RawArray
from typing import Any

from session_monitor.client import threads
from session_monitor.errors import JobCancelled, JobFailed
from session_monitor.pool.worker import FORCE_SIGNAL, RETIRING, SLOTS, init_worker, run_job

try:
    import aiomultiprocess  # type: ignore[import-untyped]
    import aiomultiprocess.core  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("session_monitor.pool needs aiomultiprocess: pip install 'panel-session-monitor[pool]'") from exc

logger = logging.getLogger(__name__)

TICK_S = 0.005
"""How often the supervisor collects results and advances cancellations."""

STOP_WAIT_S = 3.0
"""At shutdown, how long workers get to exit after SIGTERM before SIGKILL."""


_engine_thread = threading.local()
"""``pool`` is set on the engines' threads: the processes they start are the pool's workers."""

_spawn_preparation_data = multiprocessing.spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    """What a spawned process is told about its parent, without the parent's ``__main__`` for the pool's workers.

    A spawned child first re-runs its parent's main module. Under ``panel serve`` that is Panel's command line,
    so every worker would import Panel and Bokeh (seconds and tens of MiB each) for nothing: pool jobs never
    come from ``__main__`` (submit refuses them). The rest (``sys.path``, working directory) is kept, so the
    app's own job modules import as in the parent. Other processes the program spawns are left as they are.
    """
    data = _spawn_preparation_data(name)
    if getattr(_engine_thread, "pool", False):
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
    return data


multiprocessing.spawn.get_preparation_data = _preparation_data  # read at each spawn by multiprocessing's Popen


@dataclass(eq=False)
class JobState:
    """The parent's record of one job."""

    job_id: int
    session_key: str
    future: concurrent.futures.Future[Any]
    forced_ok: bool = True
    tid: int | None = None
    cancelled_at: float | None = None
    signalled_at: float | None = None
    killed: bool = False
    seen_pid: int = 0
    ended_at: float | None = None
    how_ended: str | None = None
    """``done``, ``stopped`` (cooperatively), ``interrupted`` (signal) or ``killed`` (worker killed)."""
    function: str = ""
    """The qualified name of the job's function (the session's cost and leftovers name it)."""


@dataclass
class EngineSettings:
    size: int
    grace_s: float
    kill_after_s: float


@dataclass(eq=False)
class Engine:
    """One pool generation: created lazily, shut down when its last session leaves."""

    settings: EngineSettings
    jobs: dict[int, JobState] = field(default_factory=dict)
    closed: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.cpu_s: dict[str, float] = {}
        """CPU seconds of each session's finished jobs (the session's cost: ``pool_cpu_seconds``)."""
        self.cancelled: Any = RawArray("q", SLOTS)
        self.forced: Any = RawArray("q", SLOTS)
        self.pids: Any = RawArray("q", SLOTS)
        self.loop = asyncio.new_event_loop()
        self._pool: aiomultiprocess.Pool | None = None
        self._own_manager = False
        self._stopped = threading.Event()
        self._waiting: list[tuple[JobState, bytes]] = []
        """Jobs submitted while the workers are being started."""
        with threads.untracked():  # serves every session: must not carry the starter's
            self._thread = threading.Thread(target=self._run, name="session-monitor-pool", daemon=True)
            self._thread.start()

    # -- caller side (any thread) -----------------------------------------------------------------

    def submit(self, session_key: str, payload: bytes, *, forced_ok: bool = True, function: str = "") -> JobState:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self.lock:
            if self.closed:
                raise JobCancelled(None, "the pool was shut down")
            job = JobState(next(self._ids), session_key, future, forced_ok=forced_ok, function=function)
            slot = job.job_id % SLOTS
            self.cancelled[slot] = self.forced[slot] = self.pids[slot] = 0
            self.jobs[job.job_id] = job
        future.add_done_callback(lambda f: self._caller_gave_up(job) if f.cancelled() else None)
        with contextlib.suppress(RuntimeError):  # the engine stopped meanwhile: shutdown already answered the job
            self.loop.call_soon_threadsafe(self._enqueue, job, payload)
        return job

    def cancel(self, jobs: list[JobState], reason: str) -> None:
        """Cancel these jobs: their callers get :class:`JobCancelled` now, their code is stopped next."""
        now = time.monotonic()
        with self.lock:
            for job in jobs:
                if job.ended_at is not None or job.cancelled_at is not None:
                    continue
                job.cancelled_at = now
                self.cancelled[job.job_id % SLOTS] = job.job_id
                if not job.future.done():
                    job.future.set_exception(JobCancelled(job.job_id, reason))

    def session_jobs(self, session_key: str) -> list[JobState]:
        with self.lock:
            return [job for job in self.jobs.values() if job.session_key == session_key]

    def worker_pids(self) -> list[int]:
        pool = self._pool
        if pool is None:
            return []
        return [p.pid for p in list(pool.processes) if p.pid is not None and p.is_alive()]

    def shutdown(self, reason: str, wait: bool = True, timeout_s: float = 15.0) -> None:
        """Cancel every job, stop every worker (SIGTERM, then SIGKILL), and end the engine's thread."""
        with self.lock:
            first = not self.closed
            self.closed = True
        self.cancel(list(self.jobs.values()), reason)
        if first:
            logger.info("shared pool shutting down: %s", reason)
        if wait and threading.current_thread() is not self._thread:
            self._stopped.wait(timeout_s)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def _caller_gave_up(self, job: JobState) -> None:
        """The awaiting task was cancelled (``future.cancel()``): the job is not needed any more."""
        self.cancel([job], "its caller was cancelled")

    # -- the engine's thread ----------------------------------------------------------------------

    def _run(self) -> None:
        _engine_thread.pool = True  # workers (and aiomultiprocess's manager) are started from this thread
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except Exception:
            logger.exception("the shared pool's loop failed")
        finally:
            self.loop.close()
            self._stopped.set()

    async def _main(self) -> None:
        self._own_manager = aiomultiprocess.core._manager is None
        try:
            self._pool = aiomultiprocess.Pool(
                processes=self.settings.size,
                childconcurrency=1,
                initializer=init_worker,
                initargs=(self.cancelled, self.forced, self.pids),
            )
        except Exception:
            logger.exception("the shared pool could not start its workers")
            self.shutdown("the pool could not start", wait=False)
        waiting, self._waiting = self._waiting, []
        for job, payload in waiting:
            self._enqueue(job, payload)
        while not self.closed:
            self._supervise()
            broken = self._pool is not None and self._pool._loop.done()
            if broken:  # aiomultiprocess's own task died (e.g. its manager process was killed): nothing replaces
                logger.error("the shared pool's worker supervision stopped; shutting the pool down")
                self.shutdown("the pool's worker processes were lost", wait=False)
            await asyncio.sleep(TICK_S)
        await self._stop_workers()

    def _enqueue(self, job: JobState, payload: bytes) -> None:
        if job.cancelled_at is not None or self.closed:
            self._end(job, "stopped")
        elif self._pool is None:
            self._waiting.append((job, payload))
        else:
            job.tid = self._pool.queue_work(run_job, (job.job_id, payload), {})

    def _supervise(self) -> None:
        pool = self._pool
        if pool is None:
            return
        alive = {p.pid for p in pool.processes if p.pid is not None}
        now = time.monotonic()
        for job in [j for j in list(self.jobs.values()) if j.tid is not None]:
            outcome = pool._results.pop(job.tid, None)
            if outcome is not None:
                self._finish(job, outcome)
                continue
            slot = job.job_id % SLOTS
            pid = int(self.pids[slot])
            if pid == RETIRING:
                # Interrupted: it left run_job, and its worker exits without answering.
                self._end(job, "interrupted")
                continue
            if pid > 0:
                job.seen_pid = pid
            if job.seen_pid and job.seen_pid not in alive:
                self._worker_died(job)
                continue
            if job.cancelled_at is None or not job.forced_ok or pid <= 0:
                continue
            if job.signalled_at is None and now - job.cancelled_at >= self.settings.grace_s:
                job.signalled_at = now
                self.forced[slot] = job.job_id
                _signal(pid, FORCE_SIGNAL)
            elif (
                job.signalled_at is not None and not job.killed and now - job.signalled_at >= self.settings.kill_after_s
            ):
                job.killed = True
                logger.warning("job %d did not stop after a signal (C code?): killing worker %d", job.job_id, pid)
                _signal(pid, signal.SIGKILL)

    def _finish(self, job: JobState, outcome: tuple[Any, Any]) -> None:
        value, remote_tb = outcome
        if remote_tb is not None:  # raised outside run_job (should not happen): aiomultiprocess's traceback
            self._resolve(job, exc=JobFailed(f"job {job.job_id} failed in the pool:\n{remote_tb}"))
            self._end(job, "done")
            return
        status, data, tb, cpu_s = value
        with self.lock:
            self.cpu_s[job.session_key] = self.cpu_s.get(job.session_key, 0.0) + cpu_s
        if status == "ok":
            try:
                self._resolve(job, result=pickle.loads(data))
            except Exception as exc:
                self._resolve(job, exc=JobFailed(f"job {job.job_id}: its result could not be unpickled: {exc}"))
        elif status == "error":
            error: BaseException
            try:
                error = pickle.loads(data) if data is not None else JobFailed(f"job {job.job_id} failed:\n{tb}")
            except Exception:
                error = JobFailed(f"job {job.job_id} failed:\n{tb}")
            if tb:
                error.add_note(f"in the pool worker:\n{tb}")
            self._resolve(job, exc=error)
        elif status == "cancelled" and job.cancelled_at is None:
            self._resolve(job, exc=JobCancelled(job.job_id, "the job raised JobInterrupted itself"))
        self._end(job, "stopped" if job.cancelled_at is not None else "done")

    def _worker_died(self, job: JobState) -> None:
        if job.killed:
            self._end(job, "killed")
            return
        self._resolve(job, exc=JobFailed(f"job {job.job_id}: its worker process {job.seen_pid} died"))
        self._end(job, "interrupted" if job.signalled_at is not None else "died")

    def _resolve(self, job: JobState, *, result: Any = None, exc: BaseException | None = None) -> None:
        with self.lock:
            if job.future.done():
                return
            if exc is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)

    def _end(self, job: JobState, how: str) -> None:
        job.ended_at, job.how_ended = time.monotonic(), how
        logger.debug("session %s: job %d ended (%s)", job.session_key, job.job_id, how)
        with self.lock:
            self.jobs.pop(job.job_id, None)
        if not job.future.done():  # cancelled before it was queued
            self._resolve(job, exc=JobCancelled(job.job_id, "the pool was shut down"))

    async def _stop_workers(self) -> None:
        """SIGTERM every worker, SIGKILL those still there after :data:`STOP_WAIT_S`, reap them all."""
        pool = self._pool
        if pool is None:
            return
        try:
            processes = list(pool.processes)
            pool.terminate()
            deadline = time.monotonic() + STOP_WAIT_S
            while any(p.is_alive() for p in processes) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            for process in processes:
                if process.is_alive():
                    process.kill()
            for process in processes:
                process.aio_process.join(STOP_WAIT_S)  # reaped: no zombie
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(pool.join(), STOP_WAIT_S)
            for tx, rx in pool.queues.values():
                for queue in (tx, rx):
                    queue.cancel_join_thread()  # what workers never read must not hold up exit
                    queue.close()
        except Exception:
            logger.exception("the shared pool's workers could not all be stopped")
        finally:
            self._stop_manager()

    def _stop_manager(self) -> None:
        """aiomultiprocess starts a manager process on first use; stop it if this engine caused it."""
        manager = aiomultiprocess.core._manager
        if self._own_manager and manager is not None:
            aiomultiprocess.core._manager = None
            try:
                manager.shutdown()
            except Exception:
                logger.debug("aiomultiprocess's manager did not shut down cleanly", exc_info=True)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
