"""Process-lost latency: from SIGKILL of a Panel-like process to its sessions no longer listed live.

How: a real monitor server (``session-monitor serve``, SQLite in a temporary folder, default settings:
sync interval 5 s, ``process_lost_after_s`` 10 s) and, per run, a Python child running an agent with
``--sessions`` sessions (the child of ``tests/integration/test_process_lost.py``). Once all are live
and the agent's long-poll is held, the child is SIGKILLed; the figure is the time until ``GET /sessions``
lists none of them (polled every 50 ms). Before this, they stayed live for 120 s (then ``stale``) and
were ended only at 600 s (``expired``). Figures only, no assertions.

Run: ``.venv/bin/python benchmarks/process_lost.py [--runs 5] [--sessions 20]``
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.helpers import ServerProcess, wait_until  # noqa: E402
from tests.integration.test_process_lost import start_agent_process  # noqa: E402

TARGET = "< 15 s"


def live_ids(url: str) -> set[str]:
    response = httpx.get(f"{url}/sessions", timeout=10)
    response.raise_for_status()
    return {s["session_id"] for s in response.json()["sessions"]}


def one_run(url: str, sessions: int) -> float:
    child, ids = start_agent_process(url, sessions)
    try:
        wait_until(lambda: set(ids) <= live_ids(url), timeout_s=20)
        time.sleep(1.0)  # the long-poll is held
        os.kill(child.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(lambda: not set(ids) & live_ids(url), timeout_s=60, interval_s=0.05)
        return time.monotonic() - killed_at
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"SESSION_MONITOR_DATABASE_URL": f"sqlite:///{Path(tmp) / 'monitor.sqlite3'}"}
        server = ServerProcess(env, log_path=Path(tmp) / "server.log").start()
        try:
            figures = [one_run(server.url, args.sessions) for _ in range(args.runs)]
        finally:
            server.stop()
    print(f"process_lost after SIGKILL, {args.sessions} sessions, {args.runs} runs (target {TARGET}):")
    print(
        f"  min {min(figures):.2f} s, median {statistics.median(figures):.2f} s, max {max(figures):.2f} s "
        f"(before: live 120 s, then stale until expired at 600 s)"
    )


if __name__ == "__main__":
    main()
