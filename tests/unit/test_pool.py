"""The pool's parts that need no worker process: settings, the checks made at submit, the token, the job runner."""

from __future__ import annotations

import asyncio
import pickle
from multiprocessing.sharedctypes import RawArray
from typing import Any

import pytest

from session_monitor import pool
from session_monitor.errors import ConfigError, SessionMonitorError
from session_monitor.pool import jobs as pool_jobs
from session_monitor.pool import worker as pool_worker
from session_monitor.pool.examples import cooperative_steps
from session_monitor.pool.worker import SLOTS, CancelToken, JobInterrupted, run_job


@pytest.fixture(autouse=True)
def _no_pool_settings(monkeypatch: pytest.MonkeyPatch):
    for name in ("SESSION_MONITOR_POOL_SIZE", "SESSION_MONITOR_POOL_GRACE_S", "SESSION_MONITOR_POOL_KILL_AFTER_S"):
        monkeypatch.delenv(name, raising=False)
    yield
    pool_jobs._overrides.clear()  # not configure(): the environment may still hold a bad value here


@pytest.fixture
def worker_arrays(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Any]:
    """What ``init_worker`` gives a worker, without its signal handlers (they would change pytest's process)."""
    arrays = RawArray("q", SLOTS), RawArray("q", SLOTS), RawArray("q", SLOTS)
    monkeypatch.setattr(pool_worker, "_cancelled", arrays[0])
    monkeypatch.setattr(pool_worker, "_forced", arrays[1])
    monkeypatch.setattr(pool_worker, "_pids", arrays[2])
    return arrays


# -- the package's names -------------------------------------------------------------------------------------------


def test_the_public_names_are_the_modules_own():
    assert sorted(pool.__all__) == sorted(set(pool.__all__)) and set(pool.__all__) <= set(dir(pool))
    assert pool.for_session is pool_jobs.for_session and pool.PoolStatus is pool_jobs.PoolStatus
    assert pool.CancelToken is pool_worker.CancelToken and pool.current_token is pool_worker.current_token
    assert pool.JobCancelled.__module__ == "session_monitor.errors"
    with pytest.raises(AttributeError, match="no attribute 'Engine'"):
        _ = pool.Engine  # the engine is not part of the public face


# -- settings --------------------------------------------------------------------------------------------------------


def test_settings_come_from_configure_then_the_environment_then_defaults(monkeypatch):
    assert pool_jobs._settings().grace_s == pool.DEFAULT_GRACE_S
    assert pool_jobs._settings().size >= 2
    monkeypatch.setenv("SESSION_MONITOR_POOL_SIZE", "3")
    monkeypatch.setenv("SESSION_MONITOR_POOL_GRACE_S", "0.1")
    assert (pool_jobs._settings().size, pool_jobs._settings().grace_s) == (3, 0.1)
    pool.configure(size=5, kill_after_s=2.0)
    settings = pool_jobs._settings()
    assert (settings.size, settings.grace_s, settings.kill_after_s) == (5, 0.1, 2.0)


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"size": 0}, {}, "pool size must be a whole number of 1 to 1024 worker processes, got 0"),
        ({"grace_s": -1.0}, {}, "grace_s must be 0 to 60"),
        ({}, {"SESSION_MONITOR_POOL_SIZE": "many"}, "SESSION_MONITOR_POOL_SIZE='many': not a number"),
        ({}, {"SESSION_MONITOR_POOL_SIZE": "2.5"}, "pool size must be a whole number of 1 to 1024 .* got 2.5"),
        ({}, {"SESSION_MONITOR_POOL_GRACE_S": "-1"}, "grace_s must be 0 to 60 seconds, got -1"),
        ({}, {"SESSION_MONITOR_POOL_GRACE_S": "nan"}, "SESSION_MONITOR_POOL_GRACE_S='nan': must be a finite number"),
        ({}, {"SESSION_MONITOR_POOL_KILL_AFTER_S": "1e9"}, "kill_after_s must be 0 to 60"),
    ],
)
def test_bad_settings_are_refused_with_the_setting_named(monkeypatch, kwargs, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        pool.configure(**kwargs)


# -- what submit refuses before anything runs ----------------------------------------------------------------------


def test_a_function_of_the_served_script_is_refused_with_the_reason():
    def render() -> None: ...

    render.__module__ = "bokeh_app_3f2a"
    with pytest.raises(ConfigError, match="defined in the served script .*Move it to a module"):
        pool_jobs._pack(render, (), {})


def test_an_unpicklable_job_is_refused_at_submit():
    with pytest.raises(ConfigError, match="must be picklable"):
        pool_jobs._pack(cooperative_steps, (lambda: None,), {})
    with pytest.raises(ConfigError, match="needs a callable"):
        pool_jobs._pack("not a function", (), {})


def test_job_cancelled_is_an_error_of_ours_not_an_asyncio_cancellation():
    exc = pool.JobCancelled(7, "session s1 was killed (maintenance)")
    assert isinstance(exc, SessionMonitorError) and isinstance(exc, Exception)
    assert not isinstance(exc, asyncio.CancelledError)
    assert (exc.job_id, exc.reason) == (7, "session s1 was killed (maintenance)")
    assert str(exc) == "job 7 was cancelled: session s1 was killed (maintenance)"
    assert not issubclass(JobInterrupted, Exception)  # ``except Exception`` in a job does not swallow it


def test_status_without_a_pool():
    pool.shutdown()
    assert pool.status() == pool.PoolStatus(False, 0, (), 0, 0)


# -- the token and the job runner (in this process, as a worker runs them) ------------------------------------------


def test_a_token_is_only_valid_in_a_worker(monkeypatch):
    monkeypatch.setattr(pool_worker, "_cancelled", None)
    with pytest.raises(RuntimeError, match="only valid inside a job"):
        _ = CancelToken(1).cancelled
    with pytest.raises(RuntimeError, match="only valid inside a job"):
        pool.current_token()


def test_a_token_sees_its_own_cancellation_only(worker_arrays):
    cancelled = worker_arrays[0]
    token, neighbour, same_slot_later = CancelToken(5), CancelToken(6), CancelToken(5 + SLOTS)
    assert pickle.loads(pickle.dumps(token)).job_id == 5
    assert not token.cancelled
    token.check()
    cancelled[5] = 5
    assert token.cancelled and not neighbour.cancelled and not same_slot_later.cancelled
    with pytest.raises(JobInterrupted):
        token.check()
    with pytest.raises(JobInterrupted):
        token.sleep(10)


async def test_async_sleep_ends_early_on_cancel(worker_arrays):
    token = CancelToken(9)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, worker_arrays[0].__setitem__, 9, 9)
    with pytest.raises(JobInterrupted):
        await asyncio.wait_for(token.async_sleep(30), timeout=10)
    await CancelToken(10).async_sleep(0.01)


def _pickled(fn: Any, *args: Any, **kwargs: Any) -> bytes:
    return pickle.dumps((fn, args, kwargs))


async def test_run_job_answers_ok_error_and_cancelled_and_never_raises(worker_arrays):
    cancelled, _forced, pids = worker_arrays
    status, data, tb, _cpu_s = await run_job(1, _pickled(divmod, 7, 2))
    assert (status, pickle.loads(data), tb) == ("ok", (3, 1), None)

    status, data, tb, _cpu_s = await run_job(2, _pickled(int, "x"))
    assert status == "error" and isinstance(pickle.loads(data), ValueError) and "ValueError" in tb

    cancelled[3] = 3  # cancelled while queued: never runs
    assert await run_job(3, _pickled(pytest.fail, "ran")) == ("cancelled", None, None, 0.0)

    status, data, tb, _cpu_s = await run_job(4, b"not a pickle")
    assert status == "error" and tb is not None

    status, _, _, _cpu_s = await run_job(5, _pickled(_cancels_itself))
    assert status == "cancelled"
    assert pids[1] == pids[2] == pids[5] == 0  # each job's worker slot is cleared when it ends


def _cancels_itself() -> None:
    token = pool.current_token()
    pool_worker._cancelled[token.job_id % SLOTS] = token.job_id  # type: ignore[index]
    token.check()


async def test_the_example_jobs_run_and_mark_how_they_ended(worker_arrays, tmp_path):
    from session_monitor.pool.examples import checks_every_cycle, never_checks, stuck_in_c

    calls = [
        (cooperative_steps, {"steps": 2, "step_s": 0.01}, "job 1: 2 steps done"),
        (checks_every_cycle, {"cycles": 2, "cycle_s": 0.01}, "job 2: 2 cycles done"),
        (never_checks, {"seconds": 0.01}, "job 3: counted to"),
    ]
    for job_id, (fn, kwargs, expected) in enumerate(calls, start=1):
        marker = tmp_path / f"m{job_id}"
        status, data, _, _cpu_s = await run_job(job_id, _pickled(fn, job_id, marker=str(marker), **kwargs))
        assert status == "ok" and pickle.loads(data).startswith(expected)
        assert marker.read_text().split()[1] == "finished"
        assert (tmp_path / f"m{job_id}.started").exists()
    status, data, _, _cpu_s = await run_job(4, _pickled(stuck_in_c, 4, n=10))
    assert (status, pickle.loads(data)) == ("ok", 45)

    worker_arrays[0][5] = 5  # cancelled before its first cycle: the prototype's worker stops by itself
    assert (await run_job(5, _pickled(checks_every_cycle, 5, cycles=3, cycle_s=0.01)))[:3] == ("cancelled", None, None)


async def test_the_force_handler_acts_only_on_the_forced_running_job(worker_arrays, monkeypatch):
    _cancelled, forced, _pids = worker_arrays
    monkeypatch.setattr(pool_worker, "_interrupted", 0)
    monkeypatch.setattr(pool_worker, "_raised_into", 0)
    waiting = asyncio.ensure_future(asyncio.sleep(30))
    await asyncio.sleep(0)
    monkeypatch.setattr(pool_worker, "_current", (7, waiting))

    pool_worker._on_force(0, None)  # not forced: nothing happens
    await asyncio.sleep(0.01)
    assert not waiting.cancelled()

    forced[7] = 7
    pool_worker._on_force(0, None)  # forced while it awaits: its task is cancelled, nothing is raised here
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert pool_worker._raised_into == 0

    async def computing() -> None:
        pool_worker._current = (8, asyncio.current_task())
        forced[8] = 8
        pool_worker._on_force(0, None)  # forced while it runs: raised into it

    with pytest.raises(JobInterrupted):
        await asyncio.ensure_future(computing())
    assert pool_worker._raised_into == 8
    monkeypatch.setattr(pool_worker, "_current", None)
    pool_worker._on_force(0, None)  # between jobs: nothing
