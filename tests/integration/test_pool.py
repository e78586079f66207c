"""The shared pool with real worker processes, killed through a real server and the agent's long-poll.

Sessions are trackers of a test-controlled session finder (as Panel's are); kills go through the
server's REST API, the agent's long-poll and the trackers' ``on_kill``, as in production. Jobs leave
a marker file saying how their code ended, so "its jobs stopped" is read from the jobs themselves.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from session_monitor import SessionClient, pool
from session_monitor.client import agent as agent_module
from session_monitor.pool.examples import checks_every_cycle, cooperative_steps, never_checks, stuck_in_c
from tests.conftest import DatabaseTarget
from tests.helpers import serve_in_thread, wait_until
from tests.integration.test_client import Server, start_agent

JOB_WAIT_S = 30.0
"""Bound on waits for jobs: worker processes start in a few seconds on a loaded 2-core machine."""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    from session_monitor.server import create_app

    target = DatabaseTarget("sqlite", f"sqlite:///{tmp_path / 'monitor.sqlite3'}")
    app = create_app(target.settings(sync_interval_s=60.0))
    with serve_in_thread(app) as url:
        yield Server(url, app)


@pytest.fixture
def agent(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("SESSION_MONITOR_"):
            monkeypatch.delenv(name)
    SessionClient.reset()
    agent_module.reset()
    pool.configure(size=2)
    start_agent(server.url)
    SessionClient.get_tracker("anchor")  # the agent starts with its first session; kills need its long-poll
    wait_until(lambda: server.waiting_polls() >= 1)
    yield
    pool.shutdown("test over")
    pool.configure(size=None)
    SessionClient.reset()
    agent_module.reset()


def pool_children() -> list[psutil.Process]:
    """This process's children other than multiprocessing's resource tracker (which lives as long as we do)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if not any("resource_tracker" in part for part in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
        except psutil.ZombieProcess:
            found.append(child)
    return found


def marker(tmp_path: Path, name: str) -> str:
    return str(tmp_path / f"{name}.marker")


def how_ended(path: str) -> str | None:
    """``finished``, ``interrupted`` or ``stopped``, once the job's code wrote it."""
    return Path(path).read_text().split()[1] if Path(path).exists() else None


def processes(pids: tuple[int, ...]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        try:
            found.append(psutil.Process(pid))
        except psutil.NoSuchProcess:  # a worker that was just replaced
            continue
    return found


def gone(workers: list[psutil.Process]) -> bool:
    """Every one exited. Polled, never ``wait()``ed: reaping the pool's children would hide their exit from it."""
    for worker in workers:
        try:
            if worker.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def started(path: str) -> bool:
    """The job's code has started (its marker holds time, state and PID)."""
    marker = Path(path + ".started")
    return marker.exists() and len(marker.read_text().split()) == 3


def tracker_for(sessions, key: str, app: str) -> SessionClient:
    with sessions.current(key):
        return SessionClient.get_tracker(app)


def test_killing_one_session_stops_only_its_jobs(server, agent, sessions, tmp_path):
    doomed = tracker_for(sessions, "s-doomed", "reports")
    other = tracker_for(sessions, "s-other", "reports")
    doomed_jobs, other_jobs = pool.for_session(doomed), pool.for_session(other)
    mine = [
        doomed_jobs.submit(cooperative_steps, 1, steps=200, step_s=0.1, marker=marker(tmp_path, "coop")),
        doomed_jobs.submit(never_checks, 2, seconds=60, marker=marker(tmp_path, "forced")),
    ]
    theirs = other_jobs.submit(cooperative_steps, 3, steps=3, step_s=0.5, marker=marker(tmp_path, "other"))
    wait_until(lambda: started(marker(tmp_path, "coop")) and started(marker(tmp_path, "forced")), timeout_s=JOB_WAIT_S)

    response = server.post(f"/sessions/{doomed.session_id}/kill", json={"reason": "runaway job"})
    assert response.status_code == 200, response.text

    for job in mine:
        with pytest.raises(pool.JobCancelled, match="runaway job"):
            job.result(timeout_s=JOB_WAIT_S)
    wait_until(lambda: how_ended(marker(tmp_path, "coop")) == "interrupted", timeout_s=JOB_WAIT_S)
    wait_until(lambda: how_ended(marker(tmp_path, "forced")) == "interrupted", timeout_s=JOB_WAIT_S)
    assert theirs.result(timeout_s=JOB_WAIT_S).startswith("job 3: 3 steps done")
    assert how_ended(marker(tmp_path, "other")) == "finished"
    assert pool.status().running and pool.status().sessions == 1
    wait_until(lambda: server.end_reason(doomed.session_id) == "killed")
    with pytest.raises(pool.JobCancelled):
        doomed_jobs.submit(cooperative_steps, 4)
    assert other_jobs.submit(cooperative_steps, 5, steps=1, step_s=0.01).result(JOB_WAIT_S).startswith("job 5")


def test_kill_all_cancels_its_jobs_keeps_another_apps_and_the_last_leaves_no_process(server, agent, sessions, tmp_path):
    reports = [pool.for_session(tracker_for(sessions, f"r-{i}", "reports")) for i in range(2)]
    billing = pool.for_session(tracker_for(sessions, "b-1", "billing"))
    kept = billing.submit(cooperative_steps, 2, steps=6, step_s=0.5, marker=marker(tmp_path, "billing"))
    doomed = [
        reports[0].submit(stuck_in_c, 0, marker=marker(tmp_path, "stuck")),
        reports[1].submit(cooperative_steps, 1, steps=300, step_s=0.1),  # queued: the pool has two workers
    ]
    wait_until(
        lambda: started(marker(tmp_path, "stuck")) and started(marker(tmp_path, "billing")), timeout_s=JOB_WAIT_S
    )
    stuck_worker = psutil.Process(int(Path(marker(tmp_path, "stuck") + ".started").read_text().split()[2]))

    response = server.post("/apps/reports/kill-all", json={"reason": "maintenance"})
    assert response.status_code == 200 and response.json()["killed_count"] == 2

    for job in doomed:  # none of these awaits hangs: each raises
        with pytest.raises(pool.JobCancelled, match="maintenance"):
            job.result(timeout_s=JOB_WAIT_S)
    wait_until(lambda: gone([stuck_worker]), timeout_s=JOB_WAIT_S)  # stuck in C: its worker was killed
    assert kept.result(timeout_s=JOB_WAIT_S).startswith("job 2: 6 steps done")
    assert how_ended(marker(tmp_path, "billing")) == "finished"
    assert pool.status().running and pool.status().sessions == 1

    slow = billing.submit(checks_every_cycle, 3, cycles=10, cycle_s=5.0, marker=marker(tmp_path, "cycles"))
    wait_until(lambda: started(marker(tmp_path, "cycles")), timeout_s=JOB_WAIT_S)
    workers = processes(pool.status().worker_pids)
    assert server.post("/apps/billing/kill-all").json()["killed_count"] == 1
    with pytest.raises(pool.JobCancelled):
        slow.result(timeout_s=JOB_WAIT_S)
    wait_until(lambda: not pool.status().running)
    wait_until(lambda: gone(workers), timeout_s=JOB_WAIT_S)
    wait_until(lambda: pool_children() == [], timeout_s=JOB_WAIT_S)


def test_a_closed_session_cancels_its_jobs_and_the_last_one_stops_the_pool(server, agent, sessions, tmp_path):
    tracker = tracker_for(sessions, "c-1", "reports")
    jobs = pool.for_session(tracker)
    assert pool.for_session(tracker) is jobs
    job = jobs.submit(checks_every_cycle, 1, cycles=10, cycle_s=5.0, marker=marker(tmp_path, "closed"))
    wait_until(lambda: started(marker(tmp_path, "closed")), timeout_s=JOB_WAIT_S)
    workers = processes(pool.status().worker_pids)

    tracker.stop()  # what Panel's session end does

    with pytest.raises(pool.JobCancelled, match="ended"):
        job.result(timeout_s=JOB_WAIT_S)
    wait_until(lambda: not pool.status().running)
    wait_until(lambda: gone(workers), timeout_s=JOB_WAIT_S)
    wait_until(lambda: server.end_reason("c-1") == "closed")


async def test_awaiting_from_an_event_loop_cancelling_one_job_and_a_jobs_error(agent, sessions, tmp_path):
    jobs = pool.for_session(tracker_for(sessions, "a-1", "reports"))
    keep = jobs.submit(cooperative_steps, 1, steps=2, step_s=0.2)
    drop = jobs.submit(cooperative_steps, 2, steps=500, step_s=0.1, marker=marker(tmp_path, "drop"))
    wait_until(lambda: started(marker(tmp_path, "drop")), timeout_s=JOB_WAIT_S)
    drop.cancel("not needed")
    with pytest.raises(pool.JobCancelled, match="not needed") as raised:
        await drop
    assert not isinstance(raised.value, asyncio.CancelledError)  # the awaiting task was not cancelled
    assert (await keep).startswith("job 1: 2 steps done")
    assert await jobs.run(cooperative_steps, 3, steps=1, step_s=0.01)
    with pytest.raises(ValueError, match="2x") as failed:  # the job's own error, with the worker's traceback
        await jobs.run(int, "2x")
    assert any("in the pool worker" in note for note in failed.value.__notes__)


def test_process_exit_stops_the_pool(tmp_path):
    """A process that exits with pool jobs running leaves no worker behind, and does not hang."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            from session_monitor import SessionClient, pool
            from session_monitor.pool.examples import never_checks

            if __name__ == "__main__":
                pool.configure(size=2)
                jobs = pool.for_session(SessionClient.get_tracker("exiting"))
                running = [jobs.submit(never_checks, i, seconds=120, marker=f"started-{i}") for i in range(2)]
                while not all(os.path.exists(f"started-{i}.started") for i in range(2)):
                    time.sleep(0.05)
                print(" ".join(map(str, pool.status().worker_pids)), flush=True)
                sys.exit(0)
            """
        )
    )
    env = {**os.environ, "SESSION_MONITOR_URL": "http://127.0.0.1:9"}  # no server: offline is fine
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 2
    wait_until(lambda: not any(psutil.pid_exists(pid) for pid in pids), timeout_s=10)


def test_workers_under_panel_serve_import_neither_panel_nor_the_client(tmp_path):
    """A worker imports what runs jobs: not Panel and Bokeh (which the ``panel`` command line, the parent's main
    module, imports), nor the client agent and httpx (which the parent's session side needs)."""
    script = tmp_path / "panel_like.py"
    script.write_text(
        textwrap.dedent(
            """
            import json
            import panel.command  # what the `panel` console script imports first
            from session_monitor import SessionClient, pool
            from session_monitor.pool.examples import imported_modules

            if __name__ == "__main__":
                pool.configure(size=1)
                jobs = pool.for_session(SessionClient.get_tracker("modules"))
                print(json.dumps(jobs.submit(imported_modules).result(120)), flush=True)
            """
        )
    )
    env = {**os.environ, "SESSION_MONITOR_URL": "http://127.0.0.1:9"}  # no server: offline is fine
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert "session_monitor.pool.worker" in loaded and "aiomultiprocess" in loaded  # it did run in a worker
    unwanted = [m for m in loaded if m.split(".")[0] in ("panel", "bokeh", "tornado", "httpx")]
    unwanted += [m for m in loaded if m.startswith(("session_monitor.client", "session_monitor.pool.jobs"))]
    assert unwanted == []


async def test_a_sessions_pool_jobs_count_and_their_cpu_seconds_are_its_cost(agent, sessions, tmp_path):
    from session_monitor.client.usage import pool_cpu_seconds, pool_jobs

    busy = tracker_for(sessions, "cpu-1", "reports")
    idle = tracker_for(sessions, "cpu-2", "reports")
    jobs, idle_jobs = pool.for_session(busy), pool.for_session(idle)
    await idle_jobs.run(cooperative_steps, 1, steps=1, step_s=0.3)  # waits, burns no CPU
    # A fixed amount of work (~0.45 s of CPU here), so the figure does not depend on the machine's load.
    running = jobs.submit(stuck_in_c, 2, n=5 * 10**7, marker=marker(tmp_path, "busy"))
    wait_until(lambda: started(marker(tmp_path, "busy")), timeout_s=JOB_WAIT_S)
    assert pool_jobs().get(busy.session_id) == ["session_monitor.pool.examples.stuck_in_c"]
    assert idle.session_id not in pool_jobs()
    await running
    cpu = pool_cpu_seconds()
    assert cpu[busy.session_id] >= 0.05, cpu
    assert cpu[idle.session_id] < 0.5 * cpu[busy.session_id], cpu
    assert busy.session_id not in pool_jobs()
