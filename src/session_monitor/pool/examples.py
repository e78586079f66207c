"""Jobs for the example apps, the demo, the tests and the benchmark of :mod:`session_monitor.pool`.

They live in the package because pool jobs must be importable by the worker processes: a function
defined in a served Panel script is not (its module exists only in the server process). Your own
jobs go in a module of your app's, imported by the script.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from session_monitor.pool.worker import current_token


async def cooperative_steps(job_no: int, steps: int = 10, step_s: float = 0.5, marker: str | None = None) -> str:
    """``steps`` steps of ``step_s`` seconds, checking the cancel token all along (stops within 20 ms).

    ``marker``: a file path written with the time the job's code stopped, and how (for tests and benchmarks);
    ``marker + ".started"`` is written when it starts.
    """
    token = current_token()
    _mark(marker, "started", suffix=".started")
    try:
        for _ in range(steps):
            await token.async_sleep(step_s)
    except BaseException:
        _mark(marker, "interrupted")
        raise
    _mark(marker, "finished")
    return f"job {job_no}: {steps} steps done in process {os.getpid()}"


async def checks_every_cycle(job_no: int, cycles: int = 3, cycle_s: float = 5.0, marker: str | None = None) -> str:
    """The prototype's worker: a long cycle of work, the token looked at only between cycles.

    Its cycle is longer than the pool's grace period, so a cancel reaches it through the forced path.
    """
    token = current_token()
    _mark(marker, "started", suffix=".started")
    try:
        for _ in range(cycles):
            if token.cancelled:
                _mark(marker, "stopped")
                return f"job {job_no}: stopped"
            time.sleep(cycle_s)  # work that does not look at the token
    except BaseException:
        _mark(marker, "interrupted")
        raise
    _mark(marker, "finished")
    return f"job {job_no}: {cycles} cycles done in process {os.getpid()}"


def never_checks(job_no: int, seconds: float = 30.0, marker: str | None = None) -> str:
    """Pure-Python busy work that never looks at its token: only the forced path stops it."""
    deadline = time.monotonic() + seconds
    count = 0
    _mark(marker, "started", suffix=".started")
    try:
        while time.monotonic() < deadline:
            count += 1
    except BaseException:
        _mark(marker, "interrupted")
        raise
    _mark(marker, "finished")
    return f"job {job_no}: counted to {count}"


def stuck_in_c(job_no: int, n: int = 10**12, marker: str | None = None) -> int:
    """One long C call (``sum(range(n))``) that never returns to Python: only killing its worker stops it."""
    _mark(marker, "started", suffix=".started")
    return sum(range(n))


def imported_modules() -> list[str]:
    """The modules this worker process has imported, sorted: what a worker costs, for tests and diagnostics."""
    return sorted(sys.modules)


def _mark(path: str | None, how: str, suffix: str = "") -> None:
    """Write when (epoch seconds) and how the job's code got here, and in which process."""
    if path:
        Path(path + suffix).write_text(f"{time.time():.6f} {how} {os.getpid()}")
