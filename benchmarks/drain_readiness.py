"""Drain -> unready latency: from ``POST /drain`` to the Panel process's readiness port answering 503 (and back).

How: a real monitor server (``session-monitor serve``, SQLite in a temporary folder, default settings) and, in
this process, a real agent (``session_monitor.client.agent.Agent``, its own thread and event loop, HTTP to the
server) with its readiness port open (``SESSION_MONITOR_READY_PORT``). Per run: ``POST /drain`` for this
process, then ``GET /ready`` on the readiness port every 10 ms until it answers 503; then ``POST /undrain``
until it answers 200. The path measured: the drain's commit, the long-poll woken, the agent's sync at its next
flush (<= 0.25 s), the sync answer's ``drain``. HAProxy's own ``agent-inter`` (1 s in the printed
configuration) comes on top. Figures only, no assertions.

Run: ``.venv/bin/python benchmarks/drain_readiness.py [--runs 20]``
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.helpers import ServerProcess, free_port, wait_until  # noqa: E402

from session_monitor.client.agent import Agent  # noqa: E402
from session_monitor.client.config import ClientConfig  # noqa: E402


def _status(port: int) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code
    except httpx.HTTPError:
        return 0


def _until(port: int, status: int) -> float:
    start = time.monotonic()
    wait_until(lambda: _status(port) == status, timeout_s=15, interval_s=0.01)
    return time.monotonic() - start


def _summary(name: str, figures: list[float]) -> str:
    ordered = sorted(figures)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (
        f"  {name}: min {ordered[0] * 1000:.0f} ms, median {statistics.median(ordered) * 1000:.0f} ms, "
        f"p95 {p95 * 1000:.0f} ms, max {ordered[-1] * 1000:.0f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    os.environ["SESSION_MONITOR_READY_PORT"] = str(port)
    target = {"host": socket.gethostname(), "pid": os.getpid()}
    with tempfile.TemporaryDirectory() as tmp:
        env = {"SESSION_MONITOR_DATABASE_URL": f"sqlite:///{Path(tmp) / 'monitor.sqlite3'}"}
        server = ServerProcess(env, log_path=Path(tmp) / "server.log").start(90)
        agent = Agent(ClientConfig(server_url=server.url))
        try:
            agent.start()
            wait_until(lambda: agent.syncs > 0 and _status(port) == 200, timeout_s=30)
            time.sleep(0.5)  # the long-poll is held
            unready, ready = [], []
            with httpx.Client(base_url=server.url, timeout=10) as api:
                for _ in range(args.runs):
                    api.post("/drain", json={**target, "deadline_s": 600}).raise_for_status()
                    unready.append(_until(port, 503))
                    api.post("/undrain", json=target).raise_for_status()
                    ready.append(_until(port, 200))
        finally:
            agent.stop()
            server.stop()
    print(f"readiness of a drained process, {args.runs} runs (the request's answer -> the readiness port):")
    print(_summary("POST /drain -> 503", unready))
    print(_summary("POST /undrain -> 200", ready))


if __name__ == "__main__":
    main()
