"""``GET /sessions`` latency at 10,000 and 100,000 live sessions, idle and beside 10 heartbeat writers.

For each store (SQLite, PostgreSQL) one ``session-monitor serve`` process, and beside them, in the same run on
the same machine, the prototype-style baseline (``benchmarks/prototype_server.py``: FastAPI on ``sqlite3``, one
table, pydantic responses; a model written here from the prototype's design notes, not the prototype's code):

1. **idle**: 10,000 live sessions, one ``GET /sessions`` at a time, nothing else running: p50 (target < 35 ms).
2. **10 writers**: the same listing in a loop on one connection while 10 connections send prototype-style
   ``POST /sessions/{id}/heartbeat`` back to back: listing p50 (target < 60 ms) and the heartbeats/s the writers
   got meanwhile (a server that lists fast by starving its writers shows it here).
3. **100,000**: 90,000 more sessions, one listing at a time: p50 (target < 600 ms), answer size, and the server's
   RSS after the listings (the answer is streamed: memory stays flat).

Sessions are prototype-style (no agent), written in bulk before the measurements. The load comes from the raw
HTTP/1.1 client of ``server_throughput`` in a separate process. Figures only, no assertions.

Run: ``.venv/bin/python benchmarks/listing.py [--quick] [--databases sqlite,postgresql]`` (or ``python -m benchmarks``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import ingest, prototype_server
from benchmarks.server_throughput import Server, _session_id, _table, run_load

SMALL, LARGE = 10_000, 100_000
WRITERS = 10
BASELINE = "prototype-style"


@dataclass(frozen=True)
class ListingTiming:
    idle_s: float
    warmup_s: float
    writers_s: float
    large_requests: int


QUICK = ListingTiming(idle_s=2.0, warmup_s=0.5, writers_s=3.0, large_requests=4)
FULL = ListingTiming(idle_s=4.0, warmup_s=1.0, writers_s=6.0, large_requests=8)


class PrototypeServer(Server):
    """The prototype-style baseline as a child process."""

    def __init__(self, path: Path, log_path: Path) -> None:
        super().__init__(f"sqlite:///{path}", log_path)
        self.path = path

    def argv(self) -> list[str]:
        return [sys.executable, prototype_server.__file__, str(self.path), str(self.port)]


async def _bulk_seed(url: str, first: int, count: int) -> None:
    """Prototype-style live sessions written in bulk through the store's own write path."""
    from session_monitor.store import Database
    from session_monitor.store.models import sessions

    db = Database(url)
    try:
        await db.upgrade()
        now = datetime.now(UTC)
        for lo in range(first, first + count, 5_000):
            rows = [
                {
                    "session_id": _session_id(i),
                    "app_name": f"app-{i % 7}",
                    "user_id": f"user-{i}",
                    "start_time": now,
                    "last_heartbeat": now,
                    "status": "idle",
                    "kill_requested": False,
                    "changed_at": now,
                }
                for i in range(lo, min(first + count, lo + 5_000))
            ]
            await db.write(lambda conn, rows=rows: conn.execute(sessions.insert(), rows))
    finally:
        await db.close()


def _idle(pool: ProcessPoolExecutor, server: Server, duration_s: float, min_requests: int) -> dict[str, Any]:
    spec = {
        "kind": "latency",
        "port": server.port,
        "path": "/sessions",
        "duration_s": duration_s,
        "min_requests": min_requests,
        "max_requests": 500,
    }
    return pool.submit(run_load, spec).result(timeout=600)


def _with_writers(pool: ProcessPoolExecutor, server: Server, timing: ListingTiming) -> dict[str, Any]:
    spec = {
        "kind": "heartbeats",
        "port": server.port,
        "session_ids": [_session_id(i) for i in range(WRITERS)],
        "readers": 1,
        "warmup_s": timing.warmup_s,
        "duration_s": timing.writers_s,
    }
    return pool.submit(run_load, spec).result(timeout=600)


def _rss_mb(server: Server) -> float:
    import psutil  # type: ignore[import-untyped]

    assert server.proc is not None
    return float(psutil.Process(server.proc.pid).memory_info().rss) / 1e6


def measure(
    server_for: Any, seed: Any, workdir: Path, label: str, pool: ProcessPoolExecutor, timing: ListingTiming
) -> dict[str, Any]:
    """The three measures on one server; ``seed(first, count)`` adds sessions, ``server_for()`` makes a server."""
    out: dict[str, Any] = {}
    seed(0, SMALL)
    server = server_for().start()
    try:
        cpu0 = server.cpu_s()
        out["idle"] = _idle(pool, server, timing.idle_s, 10)
        # The server's CPU per listing (the first, uncached one included), beside the wall time p50.
        out["idle_cpu_ms"] = (server.cpu_s() - cpu0) * 1e3 / (out["idle"]["n"] + 1)
        out["writers"] = _with_writers(pool, server, timing)
    finally:
        server.stop()
    print(f"  [{label}] GET /sessions at {SMALL:,}, idle and with {WRITERS} writers: done", file=sys.stderr, flush=True)
    seed(SMALL, LARGE - SMALL)
    server = server_for().start()
    try:
        out["rss_start_mb"] = _rss_mb(server)
        out["large"] = _idle(pool, server, 0.0, timing.large_requests)
        out["rss_after_mb"] = _rss_mb(server)
    finally:
        server.stop()
    print(f"  [{label}] GET /sessions at {LARGE:,}: done", file=sys.stderr, flush=True)
    return out


def run(kinds: list[str], timing: ListingTiming, pool: ProcessPoolExecutor, workdir: Path) -> dict[str, dict[str, Any]]:
    """Per store and for the baseline: ``idle``, ``writers`` and ``large`` results."""
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        with ingest.database(kind, workdir) as url:
            results[kind] = measure(
                lambda url=url, kind=kind: Server(url, workdir / f"listing-{kind}.log"),
                lambda first, count, url=url: asyncio.run(_bulk_seed(url, first, count)),
                workdir,
                kind,
                pool,
                timing,
            )
    path = workdir / "prototype-style.sqlite3"
    results[BASELINE] = measure(
        lambda: PrototypeServer(path, workdir / "prototype-style.log"),
        lambda first, count: prototype_server.seed(str(path), first, count),
        workdir,
        BASELINE,
        pool,
        timing,
    )
    return results


def rows(results: dict[str, dict[str, Any]], kinds: list[str]) -> list[list[str]]:
    """Table rows: measure, SQLite, PostgreSQL, baseline, ratio (ours / baseline)."""
    base = results.get(BASELINE)

    def line(label: str, get: Any, fmt: str, target: str) -> list[str]:
        ours = [fmt.format(get(results[k])) if k in results else "-" for k in ("sqlite", "postgresql")]
        b = get(base) if base else None
        ratio = " / ".join(f"{get(results[k]) / b:.2f}x" for k in kinds if k in results and b)
        return [label, *ours, f"{BASELINE} {fmt.format(b)}; {target}" if b is not None else target, ratio or "-"]

    return [
        line(f"GET /sessions p50 ms at {SMALL:,}, idle", lambda r: r["idle"]["p50_ms"], "{:,.1f}", "target < 35"),
        line(
            f"  server CPU ms per listing at {SMALL:,}, idle",
            lambda r: r["idle_cpu_ms"],
            "{:,.1f}",
            "wall p50 minus this: waiting for a core",
        ),
        line(
            f"GET /sessions p50 ms at {SMALL:,}, {WRITERS} heartbeat writers",
            lambda r: r["writers"]["read_p50_ms"],
            "{:,.1f}",
            "target < 60",
        ),
        line(
            f"  meanwhile: {WRITERS} writers' heartbeats/s", lambda r: r["writers"]["rate"], "{:,.0f}", "more is better"
        ),
        line(f"GET /sessions p50 ms at {LARGE:,}", lambda r: r["large"]["p50_ms"], "{:,.0f}", "target < 600"),
        line(f"  answer MB at {LARGE:,}", lambda r: r["large"]["size_mb"], "{:,.1f}", "-"),
        line(
            f"  server RSS MB growth over {LARGE:,} listings",
            lambda r: r["rss_after_mb"] - r["rss_start_mb"],
            "{:,.1f}",
            "flat is better",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="Shorter windows.")
    parser.add_argument("--databases", default="sqlite,postgresql", help="Comma-separated: sqlite, postgresql.")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    os.environ.setdefault("SESSION_MONITOR_DASHBOARD_PORT", "0")
    print(f"command: {shlex.join(['python', 'benchmarks/listing.py', *sys.argv[1:]])}; nproc={os.cpu_count()}")
    with (
        tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool,
    ):
        results = run(kinds, QUICK if args.quick else FULL, pool, Path(tmp))
    print()
    print(_table(["measure", "SQLite", "PostgreSQL", "baseline", "ratio"], rows(results, kinds)))


if __name__ == "__main__":
    main()
