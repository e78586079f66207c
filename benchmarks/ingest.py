"""Ingest: batched agent syncs against prototype-style per-session heartbeats, and 100,000 sessions at a 5 s interval.

What is measured, for each database, on one ``session-monitor serve`` process in one run:

1. **per-session** (the baseline): prototype-style ``POST /sessions/{id}/heartbeat``, one HTTP request and one
   commit per session heartbeat, 50 connections back to back (``server_throughput``'s load generator).
2. **batched**: the agent protocol. ``AGENTS`` agents hold ``SESSIONS_PER_AGENT`` sessions each (100,000 in all);
   each sends ``POST /agents/{id}/sync`` back to back, every sync the heartbeat of all its sessions and carrying
   1 % of them as changed (status). Session heartbeats/s = syncs/s x sessions per agent. Ratio to (1).
3. **at interval**: the same 100,000 sessions with every agent syncing once per ``INTERVAL_S`` (5 s, staggered),
   as deployed agents do: sync latency p50/p95 (target p95 < 100 ms), syncs answered later than their next
   one was due (``late``), and afterwards the live and ``stale`` sessions the server lists (all live, none stale).
   Run first, right after the sessions are registered: after (1) and (2) it would time PostgreSQL's autovacuum
   of their million dead rows rather than the steady state.
4. ``GET /sessions`` latency with the 100,000 live sessions, and the server's RSS: after start (1,000
   prototype sessions stored) and with 100,000 tracked sessions after a listing, per 10,000 sessions.

The load comes from a separate process (spawn): httpx for the syncs (their bodies are JSON), the raw
HTTP/1.1 client of ``server_throughput`` for the per-session path. Figures only, no assertions.

Run: ``.venv/bin/python benchmarks/ingest.py [--quick] [--databases sqlite,postgresql]`` (or ``python -m benchmarks``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.server_throughput import (
    PG_ADMIN_URL,
    Server,
    Timing,
    _heartbeats,
    _latency,
    _pct,
    _seed,
    _table,
)
from tests.helpers import pg_admin

AGENTS = 20
SESSIONS_PER_AGENT = 5_000
INTERVAL_S = 5.0
CHANGED_SHARE = 0.01
PER_SESSION_CONCURRENCY = 50
HOST_NAME = "bench-host"
"""The simulated agents' host: tells their sessions from the per-session path's."""


@dataclass
class IngestTiming:
    per_session: Timing
    batched_s: float
    interval_s: float
    """How long the 5 s interval load runs (several rounds of every agent)."""


QUICK = IngestTiming(Timing(0.3, 2.0, 1.5), batched_s=3.0, interval_s=11.0)
FULL = IngestTiming(Timing(0.5, 4.0, 3.0), batched_s=6.0, interval_s=31.0)


# -- load generator: runs in a child process ---------------------------------------------------------------------


def _agent_id(a: int) -> str:
    return f"bench-agent-{a:04d}"


def _wire(a: int, s: int, status: str, started: str) -> dict[str, Any]:
    return {
        "session_id": f"agent-{a:04d}-session-{s:06d}",
        "app_name": f"app-{s % 7}",
        "user_id": f"user-{s % 1000}",
        "status": status,
        "current_task": "compute" if status == "running" else None,
        "task_started_at": started if status == "running" else None,
        "started_at": started,
    }


def _facts(a: int, started: str) -> dict[str, Any]:
    return {"host": HOST_NAME, "pid": 10_000 + a, "command": "bench", "versions": {}, "started_at": started}


class _Agent:
    """The wire side of one simulated agent: a full sync to register, then syncs with 1 % of sessions changed."""

    def __init__(self, a: int, sessions: int) -> None:
        self.a, self.sessions, self.turn = a, sessions, 0
        self.started = datetime.now(UTC).isoformat()
        self.path = f"/agents/{_agent_id(a)}/sync"

    def full(self) -> dict[str, Any]:
        rows = [_wire(self.a, s, "idle", self.started) for s in range(self.sessions)]
        return {"agent": _facts(self.a, self.started), "full": True, "sessions": rows, "ended": []}

    def next(self) -> dict[str, Any]:
        changed = max(1, int(self.sessions * CHANGED_SHARE))
        first = (self.turn * changed) % self.sessions
        status = "running" if self.turn % 2 == 0 else "idle"
        self.turn += 1
        rows = [_wire(self.a, (first + i) % self.sessions, status, self.started) for i in range(changed)]
        return {"agent": _facts(self.a, self.started), "full": False, "sessions": rows, "ended": []}


Send = Callable[[_Agent, dict[str, Any]], Awaitable[float | None]]
"""Posts one sync of an agent; its latency in seconds, or None (and an error noted) if it failed."""


async def _agents_load(spec: dict[str, Any]) -> dict[str, Any]:
    import httpx

    agents = [_Agent(a, spec["sessions_per_agent"]) for a in range(spec["agents"])]
    limits = httpx.Limits(max_connections=len(agents), max_keepalive_connections=len(agents))
    errors: list[str] = []
    async with httpx.AsyncClient(base_url=spec["url"], timeout=120, limits=limits) as client:

        async def send(agent: _Agent, body: dict[str, Any]) -> float | None:
            sent = time.perf_counter()
            try:
                response = await client.post(agent.path, json=body)
            except httpx.HTTPError as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return None
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}: {response.text[:100]}")
                return None
            return time.perf_counter() - sent

        if spec["mode"] == "register":
            started = time.perf_counter()
            for chunk in range(0, len(agents), 4):  # 4 full syncs at a time: each is a few MB of JSON
                await asyncio.gather(*(send(a, a.full()) for a in agents[chunk : chunk + 4]))
            return {"seconds": time.perf_counter() - started, "errors": len(errors), "first_error": errors[:1]}
        return {**await _steady_load(spec, agents, send), "errors": len(errors), "first_error": errors[:1]}


async def _steady_load(spec: dict[str, Any], agents: list[_Agent], send: Send) -> dict[str, Any]:
    """Syncs back to back (``batched``) or each agent at its interval, for ``duration_s`` after ``warmup_s``."""
    latencies: list[float] = []
    window_start = time.perf_counter() + spec["warmup_s"]
    window_end = window_start + spec["duration_s"]
    missed = 0

    async def back_to_back(agent: _Agent) -> None:
        while time.perf_counter() < window_end:
            body = agent.next()
            took = await send(agent, body)
            if took is not None and window_start <= time.perf_counter() <= window_end:
                latencies.append(took)

    async def at_interval(agent: _Agent, offset_s: float) -> None:
        nonlocal missed
        next_at = window_start + offset_s
        while next_at < window_end:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            took = await send(agent, agent.next())
            if took is not None:
                latencies.append(took)
            next_at += spec["interval_s"]
            if time.perf_counter() > next_at:
                missed += 1  # the sync took longer than the interval: the server is not keeping up

    if spec["mode"] == "batched":
        await asyncio.gather(*(back_to_back(a) for a in agents))
    else:
        step = spec["interval_s"] / len(agents)
        await asyncio.gather(*(at_interval(a, i * step) for i, a in enumerate(agents)))
    return {
        "syncs": len(latencies),
        "syncs_per_s": len(latencies) / spec["duration_s"],
        "session_beats_per_s": len(latencies) * spec["sessions_per_agent"] / spec["duration_s"],
        "p50_ms": _pct(latencies, 0.5) * 1e3,
        "p95_ms": _pct(latencies, 0.95) * 1e3,
        "max_ms": max(latencies, default=float("nan")) * 1e3,
        "missed": missed,
    }


def run_agents(spec: dict[str, Any]) -> dict[str, Any]:
    """Entry point of the load process for the agent protocol."""
    return asyncio.run(_agents_load(spec))


# -- the benchmark process ---------------------------------------------------------------------------------------


def _rss_mb(server: Server) -> float:
    import psutil  # type: ignore[import-untyped]

    assert server.proc is not None
    return float(psutil.Process(server.proc.pid).memory_info().rss) / 1e6


def _count(server: Server, status: str | None) -> int:
    """How many of the agents' live sessions the server lists (in ``status``), from one page of one row."""
    import json
    import urllib.request

    query = f"limit=1&host={HOST_NAME}" + (f"&status={status}" if status else "")
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/sessions?{query}", timeout=60) as r:
        return int(json.load(r)["total"])


def bench_store(
    kind: str, url: str, workdir: Path, pool: ProcessPoolExecutor, timing: IngestTiming, *, agents: int = AGENTS
) -> dict[str, Any]:
    """Every figure of one database, on one fresh server process."""
    out: dict[str, Any] = {"kind": kind}
    asyncio.run(_seed(url, 0, 1_000))  # the per-session path's sessions, created as the prototype did
    server = Server(url, workdir / f"ingest-{kind}.log").start()
    out["command"] = shlex.join(server.command)
    base = {"url": f"http://127.0.0.1:{server.port}", "agents": agents, "sessions_per_agent": SESSIONS_PER_AGENT}
    try:
        out["rss_start_mb"] = _rss_mb(server)
        out["register"] = pool.submit(run_agents, {**base, "mode": "register"}).result(timeout=900)
        _progress(kind, f"{agents * SESSIONS_PER_AGENT:,} sessions registered", out["register"])
        # The steady state first: measured after the stress phases, it would time the database cleaning up
        # after them (PostgreSQL's autovacuum of a million dead rows), not a 5 s interval.
        spec = {**base, "mode": "interval", "interval_s": INTERVAL_S, "warmup_s": 0.2, "duration_s": timing.interval_s}
        out["interval"] = pool.submit(run_agents, spec).result(timeout=600)
        _progress(kind, f"syncs every {INTERVAL_S:g} s", out["interval"])
        out["per_session"] = _heartbeats(pool, server, PER_SESSION_CONCURRENCY, 0, timing.per_session)
        _progress(kind, "per-session heartbeats", out["per_session"])
        spec = {**base, "mode": "batched", "warmup_s": 0.5, "duration_s": timing.batched_s}
        out["batched"] = pool.submit(run_agents, spec).result(timeout=600)
        _progress(kind, "batched syncs", out["batched"])
        out["live"], out["stale"] = _count(server, None), _count(server, "stale")
        out["listing"] = _latency(pool, server, Timing(0, 0, timing.per_session.latency_s))
        _progress(kind, "GET /sessions at 100k", out["listing"])
        out["rss_loaded_mb"] = _rss_mb(server)
        out["sessions"] = agents * SESSIONS_PER_AGENT
    finally:
        server.stop()
    return out


def _progress(kind: str, what: str, result: dict[str, Any]) -> None:
    problem = f" ({result['errors']} errors: {result['first_error']})" if result.get("errors") else ""
    print(f"  [{kind}] {what}: done{problem}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    """A fresh database URL: SQLite in ``workdir``, or a PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:6]}.sqlite3'}"
        return
    if kind != "postgresql":
        raise ValueError(f"unknown database {kind!r}")
    from sqlalchemy.engine import make_url

    name = f"sm_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{name}"', PG_ADMIN_URL))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', PG_ADMIN_URL))


def run(kinds: list[str], timing: IngestTiming, pool: ProcessPoolExecutor, workdir: Path) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        with database(kind, workdir) as url:
            results[kind] = bench_store(kind, url, workdir, pool, timing)
    return results


def report(results: dict[str, dict[str, Any]]) -> None:
    rows = []
    for kind, r in results.items():
        per, batched, interval = r["per_session"], r["batched"], r["interval"]
        ratio = batched["session_beats_per_s"] / per["rate"] if per["rate"] else float("nan")
        rows.append(
            [
                kind,
                f"{per['rate']:,.0f}",
                f"{batched['session_beats_per_s']:,.0f}",
                f"{ratio:,.0f}x",
                f"{batched['p95_ms']:.0f}",
                f"{interval['p50_ms']:.1f}",
                f"{interval['p95_ms']:.1f}",
                str(interval["missed"]),
                f"{r['live']:,} / {r['stale']}",
                f"{r['listing']['p50_ms']:,.0f}",
                f"{(r['rss_loaded_mb'] - r['rss_start_mb']) / (r['sessions'] / 10_000):.1f}",
                str(per["errors"] + batched["errors"] + interval["errors"]),
            ]
        )
    print(
        f"\nSession heartbeats/s: per-session (c={PER_SESSION_CONCURRENCY}) vs batched ({AGENTS} agents x "
        f"{SESSIONS_PER_AGENT:,} sessions, back to back); then every agent syncing every {INTERVAL_S:g} s\n"
    )
    print(
        _table(
            [
                "database",
                "per-session/s",
                "batched/s",
                "ratio",
                "batched sync p95 ms",
                "5 s sync p50 ms",
                "5 s sync p95 ms",
                "late",
                "live / stale",
                "GET /sessions 100k p50 ms",
                "RSS MB/10k",
                "errors",
            ],
            rows,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="Shorter windows.")
    parser.add_argument("--databases", default="sqlite,postgresql", help="Comma-separated: sqlite, postgresql.")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    os.environ.setdefault("SESSION_MONITOR_DASHBOARD_PORT", "0")  # servers without their dashboard child
    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}; machine: nproc={os.cpu_count()}")
    with (
        tempfile.TemporaryDirectory(prefix="sm-ingest-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool,
    ):
        results = run(kinds, QUICK if args.quick else FULL, pool, Path(tmp))
    for kind, res in results.items():
        print(f"server ({kind}): {res['command']}")
    report(results)


if __name__ == "__main__":
    main()
