"""The session-facing side of the shared pool: one engine per process, a handle per session, the settings.

State lives here, in an imported module: Panel clears a served script's globals when its session
is torn down, and the callbacks that release a session run after that. Only the parent process
imports this module (it needs the client agent for its exit hook); worker processes import
:mod:`session_monitor.pool.worker` alone.
"""

from __future__ import annotations

import asyncio
import functools
import os
import pickle
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from session_monitor.client.config import env_setting, finite_float
from session_monitor.errors import ConfigError, JobCancelled
from session_monitor.pool.engine import Engine, EngineSettings, JobState

if TYPE_CHECKING:
    from session_monitor.client.tracker import SessionClient

__all__ = [
    "DEFAULT_GRACE_S",
    "DEFAULT_KILL_AFTER_S",
    "Job",
    "PoolStatus",
    "SessionJobs",
    "configure",
    "for_session",
    "shutdown",
    "status",
]

DEFAULT_GRACE_S = 0.25
"""A cancelled job has this long to stop by itself before its worker is signalled."""

DEFAULT_KILL_AFTER_S = 0.5
"""A job still running this long after the signal has its worker killed."""

_lock = threading.RLock()
_engine: Engine | None = None
_refs = 0
_sessions: dict[str, SessionJobs] = {}
_overrides: dict[str, float | int | None] = {}
_stopping: list[Engine] = []
"""Engines shutting down in the background (their last session left); process exit waits for them."""


class Job:
    """One submitted job: ``await job`` (from any event loop), ``job.result(timeout_s)`` (from a thread),
    ``job.cancel()``. Awaiting a cancelled job raises :class:`JobCancelled` at once; a job that raised
    re-raises its exception here, with the worker's traceback as a note. Cancelling the task that awaits
    a job (``task.cancel()``, a timeout) cancels the job too."""

    __slots__ = ("_engine", "_state")

    def __init__(self, engine: Engine, state: JobState) -> None:
        self._engine = engine
        self._state = state

    @property
    def job_id(self) -> int:
        return self._state.job_id

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self._state.future).__await__()

    def result(self, timeout_s: float | None = None) -> Any:
        """Block until the job's result (or its error, or :class:`JobCancelled`); ``TimeoutError`` after
        ``timeout_s``."""
        return self._state.future.result(timeout_s)

    def done(self) -> bool:
        return self._state.future.done()

    def cancel(self, reason: str = "cancelled") -> None:
        """Cancel this job only."""
        self._engine.cancel([self._state], reason)

    def __repr__(self) -> str:
        return f"<Job {self.job_id} session={self._state.session_key} done={self.done()}>"


class SessionJobs:
    """A session's handle on the shared pool (from :func:`for_session`)."""

    def __init__(self, engine: Engine, session_key: str) -> None:
        self._engine = engine
        self.session_key = session_key
        self._closed_reason: str | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
        """Queue ``fn(*args, **kwargs)`` (sync or async) on the pool; returns at once.

        ``fn`` must be importable by the worker processes: a function of a module, never one defined
        in the served Panel script (its module exists only in this process). ``args``, ``kwargs`` and the
        result must be picklable. Raises :class:`JobCancelled` once the session has left the pool.
        """
        payload = _pack(fn, args, kwargs)
        if self._closed_reason is not None:
            raise JobCancelled(None, self._closed_reason)
        function = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
        return Job(self._engine, self._engine.submit(self.session_key, payload, function=function))

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``await`` the result of ``fn(*args, **kwargs)`` run on the pool (see :meth:`submit`)."""
        return await self.submit(fn, *args, **kwargs)

    def cancel(self, reason: str = "cancelled") -> int:
        """Cancel this session's queued and running jobs (the session keeps the pool); how many."""
        jobs = [job for job in self._engine.session_jobs(self.session_key) if job.cancelled_at is None]
        self._engine.cancel(jobs, reason)
        return len(jobs)

    @property
    def running(self) -> int:
        """This session's jobs not finished yet (queued, running, or being stopped)."""
        return len(self._engine.session_jobs(self.session_key))

    @property
    def closed(self) -> bool:
        return self._closed_reason is not None or self._engine.closed

    def _close(self, reason: str) -> None:
        self._closed_reason = reason
        self._engine.cancel(self._engine.session_jobs(self.session_key), reason)


@dataclass(frozen=True)
class PoolStatus:
    """What :func:`status` reports: whether a pool runs, its worker PIDs, the sessions holding it."""

    running: bool
    size: int
    worker_pids: tuple[int, ...]
    sessions: int
    jobs: int


def configure(*, size: int | None = None, grace_s: float | None = None, kill_after_s: float | None = None) -> None:
    """Settings for the next pool started (a running pool keeps its own).

    Args:
        size: Worker processes, i.e. jobs run at once (``SESSION_MONITOR_POOL_SIZE``; default the CPU count,
            at least 2).
        grace_s: Seconds a cancelled job gets to stop by itself before it is interrupted
            (``SESSION_MONITOR_POOL_GRACE_S``, default 0.25).
        kill_after_s: Seconds after the interruption before its worker is killed
            (``SESSION_MONITOR_POOL_KILL_AFTER_S``, default 0.5).
    """
    with _lock:
        _overrides.update(size=size, grace_s=grace_s, kill_after_s=kill_after_s)
        _settings()  # validates


def for_session(tracker: SessionClient) -> SessionJobs:
    """This session's jobs on the shared pool (the pool starts if none runs).

    The first call for a session takes a reference on the pool, released by the tracker's ``on_kill``
    (the session killed, closed, lost, or the process exiting): that cancels the session's jobs and, for
    the last session, shuts the pool down. Later calls return the same handle.
    """
    key = tracker.session_id
    with _lock:
        jobs = _sessions.get(key)
        if jobs is not None and not jobs.closed:
            return jobs
        global _engine, _refs
        if _engine is None or _engine.closed:
            _engine, _refs = Engine(_settings()), 0
        jobs = SessionJobs(_engine, key)
        _sessions[key] = jobs
        _refs += 1
    tracker.on_kill(functools.partial(_release, jobs, tracker))
    return jobs


def shutdown(reason: str = "the pool was shut down", *, wait: bool = True, timeout_s: float = 15.0) -> None:
    """Shut the pool down now: every job cancelled, every worker stopped and reaped (process exit does this).

    Sessions holding it get a new pool the next time they call :func:`for_session`.
    """
    global _engine, _refs
    with _lock:
        engine, _engine, _refs = _engine, None, 0
        for jobs in _sessions.values():
            if jobs._engine is engine:
                jobs._closed_reason = reason
        _sessions.clear()
        engines = [e for e in [*_stopping, engine] if e is not None]
        _stopping.clear()
    for each in engines:
        each.shutdown(reason, wait=wait, timeout_s=timeout_s)


def status() -> PoolStatus:
    """The running pool, if any (diagnostics and tests)."""
    with _lock:
        engine, refs = _engine, _refs
    if engine is None or engine.closed:
        return PoolStatus(False, 0, (), 0, 0)
    return PoolStatus(True, engine.settings.size, tuple(engine.worker_pids()), refs, len(engine.jobs))


def _release(jobs: SessionJobs, tracker: SessionClient) -> None:
    """The session left (killed, closed, lost, process exit): cancel its jobs; the last one stops the pool."""
    reason = f"session {tracker.session_id} "
    reason += f"was killed ({tracker.kill_reason or 'no reason given'})" if tracker._killed else "ended"
    global _engine, _refs
    engine: Engine | None = None
    with _lock:
        if _sessions.get(jobs.session_key) is jobs:
            del _sessions[jobs.session_key]
        if jobs._closed_reason is not None:
            return
        jobs._close(reason)
        if jobs._engine is not None:
            with jobs._engine.lock:
                jobs._engine.cpu_s.pop(jobs.session_key, None)
        if jobs._engine is not _engine:
            return
        _refs -= 1
        if _refs <= 0:
            engine, _engine = _engine, None
            _stopping[:] = [e for e in _stopping if not e.stopped] + [engine]
    if engine is not None:
        engine.shutdown("its last session left", wait=False)


def _settings() -> EngineSettings:
    size = _pick("size", "SESSION_MONITOR_POOL_SIZE", max(2, os.cpu_count() or 2))
    grace_s = _pick("grace_s", "SESSION_MONITOR_POOL_GRACE_S", DEFAULT_GRACE_S)
    kill_after_s = _pick("kill_after_s", "SESSION_MONITOR_POOL_KILL_AFTER_S", DEFAULT_KILL_AFTER_S)
    if size != int(size) or not 1 <= size <= 1024:
        raise ConfigError(f"pool size must be a whole number of 1 to 1024 worker processes, got {size:g}")
    for name, value in (("grace_s", grace_s), ("kill_after_s", kill_after_s)):
        if not 0 <= value <= 60:
            raise ConfigError(f"pool {name} must be 0 to 60 seconds, got {value:g}")
    return EngineSettings(size=int(size), grace_s=grace_s, kill_after_s=kill_after_s)


def _pick(name: str, env: str, default: float) -> float:
    """Explicit (``configure``) > environment variable (read as the client reads its own) > default."""
    value = _overrides.get(name)
    return env_setting(env, float(default), finite_float, None if value is None else float(value))


def _pack(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle the call now, in the caller, so a bad function or argument fails here with a clear message."""
    if not callable(fn):
        raise ConfigError(f"a pool job needs a callable, got {fn!r}")
    module = getattr(fn, "__module__", "") or ""
    if module.startswith("bokeh_app_") or module == "__main__":
        raise ConfigError(
            f"{getattr(fn, '__qualname__', fn)!r} is defined in the served script ({module}): worker processes "
            "cannot import it. Move it to a module of its own and import it."
        )
    try:
        return pickle.dumps((fn, args, kwargs))
    except Exception as exc:
        raise ConfigError(f"a pool job must be picklable (function, arguments): {exc}") from exc


def _shutdown_at_exit() -> None:
    shutdown("the process is exiting", wait=True, timeout_s=10.0)


def _register_exit() -> None:
    # After the trackers' own exit hook (sessions ended as process_exit, their on_kill run), and before
    # multiprocessing's, which would wait for our workers forever.
    from session_monitor.client.agent import on_exit

    on_exit(_shutdown_at_exit)


_register_exit()
