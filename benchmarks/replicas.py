"""Kill latency through the agent protocol: on one replica, and across two replicas sharing one PostgreSQL.

An in-process :class:`~session_monitor.client.agent.Agent` (the real client) holds its command long-poll on
replica B. Each kill is a ``POST /sessions/{id}/kill`` to B (one replica) or to A (across replicas: A commits,
NOTIFYs, B's listener wakes the long-poll); the figure is the time from sending the kill request to the
session's ``on_kill`` running in the agent. The replicas tell agents to sync only every 60 s, so the sync's
fallback path cannot deliver a kill first. Figures only, no assertions.

Run: ``.venv/bin/python benchmarks/replicas.py [--kills 40]`` (or ``python -m benchmarks``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ingest import database
from benchmarks.server_throughput import Server, _pct, _table

from session_monitor.client.agent import Agent, SessionRecord
from session_monitor.client.config import ClientConfig

PROTOTYPE_KILL = "next heartbeat: up to 30 s"


def _kill_latencies(agent: Agent, kill_url: str, prefix: str, kills: int) -> list[float]:
    """Track ``kills`` sessions, kill them one at a time through ``kill_url``; seconds until each ``on_kill``."""
    arrived: dict[str, threading.Event] = {}
    for i in range(kills):
        sid = f"{prefix}-{i:04d}"
        arrived[sid] = threading.Event()
        record = SessionRecord(sid, "bench", None, started_at=datetime.now(UTC))
        agent.track(record, lambda _reason, event=arrived[sid]: event.set())
    latencies: list[float] = []
    with httpx.Client(base_url=kill_url, timeout=10) as http:
        deadline = time.monotonic() + 30
        while len(http.get("/sessions", params={"app": "bench"}).json()["sessions"]) < len(arrived):
            if time.monotonic() > deadline:
                raise RuntimeError("the agent's sessions did not reach the server")
            time.sleep(0.05)
        for sid, event in arrived.items():
            time.sleep(0.05)  # the agent's next long-poll is in place
            sent = time.perf_counter()
            http.post(f"/sessions/{sid}/kill", json={"reason": "benchmark"}).raise_for_status()
            if not event.wait(10):
                raise RuntimeError(f"kill of {sid} did not arrive within 10 s")
            latencies.append(time.perf_counter() - sent)
            agent.end(sid, "killed")
    return latencies


def measure(kills: int, workdir: Path) -> dict[str, Any]:
    """Two replicas on a fresh PostgreSQL database; the kill latencies of both paths."""
    names = ("SESSION_MONITOR_SYNC_INTERVAL_S", "SESSION_MONITOR_DASHBOARD_PORT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(SESSION_MONITOR_SYNC_INTERVAL_S="60", SESSION_MONITOR_DASHBOARD_PORT="0")  # the servers' env
    servers: list[Server] = []
    try:
        with database("postgresql", workdir) as url:
            try:
                a = Server(url, workdir / "replica-a.log")
                servers.append(a.start())
                b = Server(url, workdir / "replica-b.log")
                servers.append(b.start())
                agent = Agent(ClientConfig(server_url=f"http://127.0.0.1:{b.port}", flush_delay_s=0.02, long_poll_s=25))
                try:
                    one = _kill_latencies(agent, f"http://127.0.0.1:{b.port}", "same", kills)
                    across = _kill_latencies(agent, f"http://127.0.0.1:{a.port}", "across", kills)
                finally:
                    agent.stop(timeout_s=3)
            finally:
                for server in servers:
                    server.stop()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {"one_replica": summary(one), "across_replicas": summary(across), "kills": kills}


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": _pct(latencies, 0.5) * 1e3,
        "p95_ms": _pct(latencies, 0.95) * 1e3,
        "max_ms": max(latencies) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=40, help="Kills per path (default 40).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sm-replicas-") as tmp:
        result = measure(args.kills, Path(tmp))
    rows = [
        [path, f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['max_ms']:.1f}"]
        for path, r in (("one replica", result["one_replica"]), ("across replicas", result["across_replicas"]))
    ]
    print(f"\nKill request -> on_kill in the agent, {args.kills} kills per path (prototype: {PROTOTYPE_KILL})\n")
    print(_table(["path", "p50 ms", "p95 ms", "max ms"], rows))


if __name__ == "__main__":
    main()
