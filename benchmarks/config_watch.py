"""Shared config: from ``cfg.set()`` in one process to the ``watch`` callbacks of 3 other processes.

The writer is this process (the real client: an agent and ``SharedConfig``); the watchers are 3 child processes,
each ``shared_config(...)`` with a ``watch`` on its own asyncio loop, which print the wall-clock time each version
reached the callback (one machine, one clock). The servers tell agents to sync only every 60 s, so what arrives
in time came through the push (the command long-poll), not a sync. Runs on SQLite and PostgreSQL with one
server, and across two replicas on one PostgreSQL (the writer on replica A, the watchers on B: A commits, its
NOTIFY wakes B's long-polls). Prints p50/p95/max over every (change, watcher); target p95 < 500 ms. No assertions.

Run: ``.venv/bin/python benchmarks/config_watch.py [--changes 60]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ingest import database
from benchmarks.server_throughput import Server, _pct, _table

from session_monitor.client.agent import Agent
from session_monitor.client.config import ClientConfig
from session_monitor.client.shared import SharedConfig

WATCHERS = 3
APP = "bench_config"

WATCHER_CODE = """
import asyncio, sys, time
import session_monitor

async def main():
    cfg = session_monitor.shared_config(sys.argv[1])
    cfg.watch("n", lambda value, version: print(version, time.time(), flush=True))
    await asyncio.to_thread(cfg.wait_loaded, 30)
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.read)  # until the benchmark closes our stdin

asyncio.run(main())
"""


def _watchers(url: str, cache: Path) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "SESSION_MONITOR_URL": url, "SESSION_MONITOR_CONFIG_CACHE_DIR": str(cache)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WATCHER_CODE, APP], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(WATCHERS)
    ]
    for proc in procs:
        assert proc.stdout is not None
        while (line := proc.stdout.readline()) and line.strip() != "ready":
            pass
    return procs


def run_case(writer_url: str, watcher_url: str, changes: int, workdir: Path) -> dict[str, Any]:
    procs = _watchers(watcher_url, workdir / "watchers")
    agent = Agent(ClientConfig(server_url=writer_url, flush_delay_s=0.02, long_poll_s=25))
    try:
        cfg = SharedConfig(APP, agent)
        cfg.wait_loaded(30)
        sent: dict[int, float] = {}
        for i in range(changes):
            started = time.time()
            version = cfg.set("n", i)
            sent[version] = started
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        agent.stop(timeout_s=3)
        outputs = []
        for proc in procs:
            out, _ = proc.communicate(input="", timeout=30)
            outputs.append(out)
    latencies: list[float] = []
    missing = 0
    for out in outputs:
        got = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                got[int(parts[0])] = float(parts[1])
        for version, at in sent.items():
            if version in got:
                latencies.append(got[version] - at)
            else:
                missing += 1
    return {
        "n": len(latencies),
        "missing": missing,
        "p50_ms": _pct(latencies, 0.50) * 1000,
        "p95_ms": _pct(latencies, 0.95) * 1000,
        "max_ms": max(latencies, default=float("nan")) * 1000,
    }


def measure(changes: int, workdir: Path) -> dict[str, dict[str, Any]]:
    os.environ.update(SESSION_MONITOR_SYNC_INTERVAL_S="60", SESSION_MONITOR_DASHBOARD_PORT="0")  # the servers' env
    results: dict[str, dict[str, Any]] = {}
    for kind in ("sqlite", "postgresql"):
        with database(kind, workdir) as url:
            server = Server(url, workdir / f"{kind}.log").start()
            try:
                base = f"http://127.0.0.1:{server.port}"
                results[f"{kind}, one server"] = run_case(base, base, changes, workdir)
            finally:
                _stop(server)
    with database("postgresql", workdir) as url:
        a = Server(url, workdir / "replica-a.log").start()
        b = Server(url, workdir / "replica-b.log").start()
        try:
            results["postgresql, write on A, watch on B"] = run_case(
                f"http://127.0.0.1:{a.port}", f"http://127.0.0.1:{b.port}", changes, workdir
            )
        finally:
            _stop(a)
            _stop(b)
    return results


def _stop(server: Server) -> None:
    if server.proc is not None and server.proc.poll() is None:
        server.proc.terminate()
        server.proc.wait(timeout=15)


def report(results: dict[str, dict[str, Any]]) -> str:
    rows = [
        [case, str(r["n"]), str(r["missing"]), f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}", f"{r['max_ms']:.0f}"]
        for case, r in results.items()
    ]
    headers = ["set() -> watch callback in 3 other processes", "samples", "missing", "p50 ms", "p95 ms", "max ms"]
    return _table(headers, rows) + "\n(target: p95 < 500 ms)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=60, help="Writes per case (each reaches 3 watchers).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(args.changes, Path(tmp))
    sys.stdout.write(report(results) + "\n")


if __name__ == "__main__":
    main()
