"""Cancel → job stopped, for each way a job can be stopped by ``session_monitor.pool``.

    .venv/bin/python benchmarks/pool_cancel.py [--runs 20] [--size 2]

For each kind of job, ``--runs`` times: start the job, cancel it, and time

- *await raised*: the caller's ``job.result()`` raising ``JobCancelled`` (target: at once);
- *job stopped*: the job's own code leaving (its marker file's time), or, for a job stuck in C code, its
  worker process gone (target: < 1 s whatever the job's cycle).

Kinds: ``cooperative`` awaits ``token.async_sleep`` (the token path); ``cycles`` looks at its token only
between 5 s cycles of blocking work, and ``never-checks`` never does (both: the signal path, after the
grace period); ``stuck-in-c`` sits in one C call (the kill path, after grace + kill_after).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from session_monitor import pool
from session_monitor.pool import jobs as pool_jobs
from session_monitor.pool.examples import checks_every_cycle, cooperative_steps, never_checks, stuck_in_c

KINDS: dict[str, tuple[Any, dict[str, Any]]] = {
    "cooperative": (cooperative_steps, {"steps": 1, "step_s": 300.0}),
    "cycles": (checks_every_cycle, {"cycles": 60, "cycle_s": 5.0}),
    "never-checks": (never_checks, {"seconds": 300.0}),
    "stuck-in-c": (stuck_in_c, {}),
}


class Session:
    """What ``pool.for_session`` needs of a tracker: an id and ``on_kill``."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.kill_reason: str | None = None
        self._killed = False
        self.callbacks: list[Any] = []

    def on_kill(self, callback: Any) -> None:
        self.callbacks.append(callback)

    def end(self) -> None:
        for callback in self.callbacks:
            callback()


def wait_for(predicate: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.001)
    children = [(c.pid, c.status(), c.cmdline()[-1][:40]) for c in psutil.Process().children()]
    raise TimeoutError(f"gave up waiting; pool {pool.status()}, children {children}")


def gone(process: psutil.Process) -> bool:
    """Exited (a zombie until the pool reaps it, then no more)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def one_run(jobs: pool.SessionJobs, kind: str, folder: Path, n: int) -> tuple[float, float]:
    fn, kwargs = KINDS[kind]
    marker = folder / f"{kind}-{n}"
    job = jobs.submit(fn, n, marker=str(marker), **kwargs)
    started = Path(str(marker) + ".started")
    wait_for(lambda: started.exists() and len(started.read_text().split()) == 3)
    worker = psutil.Process(int(started.read_text().split()[2]))
    time.sleep(0.2)  # the job is well inside its work

    cancelled_at = time.time()
    job.cancel("benchmark")
    try:
        job.result(timeout_s=30)
    except pool.JobCancelled:
        raised_s = time.time() - cancelled_at
    else:
        raise AssertionError(f"{kind}: the job finished instead of being cancelled")

    if kind == "stuck-in-c":
        wait_for(lambda: gone(worker))  # not worker.wait(): reaping the pool's child would blind the pool
        stopped_s = time.time() - cancelled_at  # polled every 1 ms
    else:
        wait_for(lambda: marker.exists() and len(marker.read_text().split()) == 3)
        stopped_s = float(marker.read_text().split()[0]) - cancelled_at
    # Before the next run: the replaced worker back, so every run starts on a ready pool.
    wait_for(lambda: len(pool.status().worker_pids) == pool.status().size)
    return raised_s, stopped_s


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18] if len(ordered) >= 2 else ordered[0]
    return (
        f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--size", type=int, default=2, help="pool worker processes")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ", ".join(KINDS))
    args = parser.parse_args()
    pool.configure(size=args.size)
    session = Session("benchmark")
    jobs = pool.for_session(session)  # type: ignore[arg-type]
    settings = pool_jobs._settings()
    print(
        f"pool of {args.size} workers, grace {settings.grace_s:g} s, kill after {settings.kill_after_s:g} s; "
        f"{args.runs} runs per kind"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.kinds.split(","):
            results = [one_run(jobs, kind, Path(tmp), n) for n in range(args.runs)]
            print(f"{kind:<13} await raised: {summary([r[0] for r in results])}")
            print(f"{'':<13} job stopped:  {summary([r[1] for r in results])}")
    started = time.monotonic()
    workers = [psutil.Process(pid) for pid in pool.status().worker_pids]
    session.end()  # the last session leaves: the pool shuts down
    wait_for(lambda: all(gone(worker) for worker in workers), timeout_s=30)
    print(f"last session left → every worker gone in {(time.monotonic() - started) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
