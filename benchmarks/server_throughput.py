"""Server throughput: prototype-style heartbeats/s and ``GET /sessions`` latency, on SQLite and PostgreSQL.

What is measured, for each database:

1. Heartbeats/s at concurrency 1, 10, 50 and 200: each connection is one session sending
   ``POST /sessions/{id}/heartbeat`` back to back (the prototype's protocol: one HTTP request per
   heartbeat, each a write the server commits before answering). 1,000 sessions are stored.
   ``writes/commit`` is the server's own count (``/metrics``): how many heartbeats its group-commit
   writer put in one transaction.
2. The same at concurrency 50 while two readers list all 10,000 stored sessions (``GET /sessions``)
   in a loop, as a ratio against the same run without readers (the prototype fell to ~10 heartbeats/s).
3. ``GET /sessions`` latency (p50, p95), one request at a time, with 1,000 and 10,000 stored sessions.

How: every server is a real ``session-monitor serve`` subprocess on a free loopback port, its database
fresh (SQLite in a temporary folder; PostgreSQL in a database created here and dropped at the end).
Sessions are seeded in bulk through the server's own ``Store`` before the server starts. The load comes
from a separate process (multiprocessing, spawn), so its CPU is not the server's: a small HTTP/1.1
client on raw asyncio streams (uvloop when installed), one keep-alive connection per simulated session.
Each figure is the number of answers completed inside a fixed window (after a short warm-up) divided by
the window; ``client CPU`` tells whether the load generator itself was the limit. Figures only, no
assertions; on a shared or small machine they vary from run to run.

Run: ``.venv/bin/python benchmarks/server_throughput.py [--quick] [--databases sqlite,postgresql]``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

PG_ADMIN_URL = os.environ.get("SESSION_MONITOR_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.helpers import pg_admin  # noqa: E402  (the checkout's test helpers)

HOST = "127.0.0.1"
CONCURRENCIES = (1, 10, 50, 200)
READER_CONCURRENCY = 50
SMALL, LARGE = 1_000, 10_000
PROTOTYPE_WITH_READERS = "~10/s"

# -- load generator: runs in a child process ----------------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, int]:
    """Read one HTTP/1.1 response; return its status and body length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        if length:
            await reader.readexactly(length)
        return status, length
    total = 0
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        await reader.readexactly(size + 2)
        total += size
        if size == 0:
            return status, total


@dataclass
class _Tally:
    done: int = 0
    errors: int = 0
    first_error: str = ""

    def error(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what


async def _client_loop(
    port: int, request: bytes, start: float, end: float, tally: _Tally, latencies: list[float]
) -> None:
    """Send ``request`` back to back on one keep-alive connection until ``end``; count answers after ``start``."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port, limit=2**22)
    except OSError as exc:
        tally.error(f"connect: {exc}")
        return
    try:
        while True:
            sent = time.perf_counter()
            if sent >= end:
                return
            writer.write(request)
            status, _ = await _read_response(reader)
            now = time.perf_counter()
            if not 200 <= status < 300:
                tally.error(f"HTTP {status}")
            elif start <= now <= end:
                tally.done += 1
                latencies.append(now - sent)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        tally.error(f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


def _request(method: str, path: str, port: int) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Length: 0\r\n\r\n".encode()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _heartbeat_load(spec: dict[str, Any]) -> dict[str, Any]:
    port: int = spec["port"]
    start = time.perf_counter() + spec["warmup_s"]
    end = start + spec["duration_s"]
    beats, reads = _Tally(), _Tally()
    beat_lat: list[float] = []
    read_lat: list[float] = []
    tasks = [
        _client_loop(port, _request("POST", f"/sessions/{sid}/heartbeat", port), start, end, beats, beat_lat)
        for sid in spec["session_ids"]
    ]
    tasks += [
        _client_loop(port, _request("GET", "/sessions", port), start, end, reads, read_lat)
        for _ in range(spec["readers"])
    ]
    cpu_before: float | None = None

    async def mark_cpu() -> None:
        nonlocal cpu_before
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        cpu_before = sum(os.times()[:2])

    await asyncio.gather(mark_cpu(), *tasks)
    cpu = sum(os.times()[:2]) - (cpu_before or 0.0)
    window = spec["duration_s"]
    return {
        "rate": beats.done / window,
        "p50_ms": _pct(beat_lat, 0.5) * 1e3,
        "p95_ms": _pct(beat_lat, 0.95) * 1e3,
        "errors": beats.errors + reads.errors,
        "first_error": beats.first_error or reads.first_error,
        "reads": reads.done,
        "read_p50_ms": _pct(read_lat, 0.5) * 1e3,
        "client_cpu": cpu / window,
    }


async def _latency_load(spec: dict[str, Any]) -> dict[str, Any]:
    port: int = spec["port"]
    reader, writer = await asyncio.open_connection(HOST, port, limit=2**22)
    request = _request("GET", spec["path"], port)
    latencies: list[float] = []
    errors, size = 0, 0
    deadline = time.perf_counter() + spec["duration_s"]
    try:
        for i in range(spec["max_requests"] + 1):
            sent = time.perf_counter()
            if sent >= deadline and len(latencies) >= spec["min_requests"]:
                break
            writer.write(request)
            status, size = await _read_response(reader)
            if not 200 <= status < 300:
                errors += 1
            elif i > 0:  # the first one warms caches
                latencies.append(time.perf_counter() - sent)
    finally:
        writer.close()
    return {
        "n": len(latencies),
        "p50_ms": _pct(latencies, 0.5) * 1e3,
        "p95_ms": _pct(latencies, 0.95) * 1e3,
        "errors": errors,
        "size_mb": size / 1e6,
    }


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Entry point of the load process."""
    coro = _heartbeat_load(spec) if spec["kind"] == "heartbeats" else _latency_load(spec)
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def load_generator_name() -> str:
    try:
        loop = f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        loop = "asyncio"
    return f"raw HTTP/1.1 keep-alive client on asyncio streams ({loop}), 1 separate process"


# -- servers and databases: the benchmark process ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    """``session-monitor serve`` as a child process, stopped by its own PID."""

    def __init__(self, database_url: str, log_path: Path) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        return ["session-monitor", "serve", "--port", str(self.port), "--database-url", self.database_url]

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "session_monitor", *self.command[1:]]

    def start(self) -> Server:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy; see {self.log_path}")

    def cpu_s(self) -> float:
        import psutil  # type: ignore[import-untyped]

        assert self.proc is not None
        times = psutil.Process(self.proc.pid).cpu_times()
        return float(times.user + times.system)

    def batch_totals(self) -> tuple[float, float]:
        """(commits, writes) so far, from the server's write-batch histogram."""
        with urllib.request.urlopen(f"http://{HOST}:{self.port}/metrics", timeout=10) as r:
            text = r.read().decode()
        values = {}
        for line in text.splitlines():
            for key in ("session_monitor_db_write_batch_size_count", "session_monitor_db_write_batch_size_sum"):
                if line.startswith(key + " "):
                    values[key] = float(line.split()[1])
        return values["session_monitor_db_write_batch_size_count"], values["session_monitor_db_write_batch_size_sum"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def _session_id(i: int) -> str:
    return f"bench-{i:06d}"


async def _seed(url: str, first: int, count: int) -> None:
    from session_monitor.store import Database, Store

    db = Database(url)
    try:
        await db.upgrade()
        store = Store(db, stale_after_s=120)
        for lo in range(first, first + count, 1000):
            hi = min(first + count, lo + 1000)
            await asyncio.gather(
                *(store.create_session(f"app-{i % 7}", f"user-{i}", session_id=_session_id(i)) for i in range(lo, hi))
            )
    finally:
        await db.close()


@dataclass
class Timing:
    warmup_s: float
    duration_s: float
    latency_s: float


def _heartbeats(
    pool: ProcessPoolExecutor, server: Server, concurrency: int, readers: int, timing: Timing
) -> dict[str, Any]:
    spec = {
        "kind": "heartbeats",
        "port": server.port,
        "session_ids": [_session_id(i) for i in range(concurrency)],
        "readers": readers,
        "warmup_s": timing.warmup_s,
        "duration_s": timing.duration_s,
    }
    commits0, writes0 = server.batch_totals()
    cpu0, t0 = server.cpu_s(), time.perf_counter()
    result = pool.submit(run_load, spec).result(timeout=120)
    cpu1, t1 = server.cpu_s(), time.perf_counter()
    commits1, writes1 = server.batch_totals()
    result["writes_per_commit"] = (writes1 - writes0) / max(commits1 - commits0, 1)
    result["server_cpu"] = (cpu1 - cpu0) / (t1 - t0)
    return result


def _latency(pool: ProcessPoolExecutor, server: Server, timing: Timing) -> dict[str, Any]:
    spec = {
        "kind": "latency",
        "port": server.port,
        "path": "/sessions",
        "duration_s": timing.latency_s,
        "min_requests": 10,
        "max_requests": 500,
    }
    return pool.submit(run_load, spec).result(timeout=300)


def bench_database(kind: str, url: str, workdir: Path, pool: ProcessPoolExecutor, timing: Timing) -> dict[str, Any]:
    out: dict[str, Any] = {"heartbeats": {}, "latency": {}}
    asyncio.run(_seed(url, 0, SMALL))
    server = Server(url, workdir / f"{kind}-1.log").start()
    out["command"] = shlex.join(server.command)
    try:
        for c in CONCURRENCIES:
            out["heartbeats"][c] = _heartbeats(pool, server, c, 0, timing)
            _progress(kind, f"heartbeats c={c}", out["heartbeats"][c])
        out["latency"][SMALL] = _latency(pool, server, timing)
        _progress(kind, f"GET /sessions at {SMALL}", out["latency"][SMALL])
    finally:
        server.stop()
    asyncio.run(_seed(url, SMALL, LARGE - SMALL))
    server = Server(url, workdir / f"{kind}-2.log").start()
    try:
        out["latency"][LARGE] = _latency(pool, server, timing)
        _progress(kind, f"GET /sessions at {LARGE}", out["latency"][LARGE])
        out["large_alone"] = _heartbeats(pool, server, READER_CONCURRENCY, 0, timing)
        _progress(kind, "heartbeats c=50, 10k stored", out["large_alone"])
        out["large_readers"] = _heartbeats(pool, server, READER_CONCURRENCY, 2, timing)
        _progress(kind, "heartbeats c=50 + 2 readers", out["large_readers"])
    finally:
        server.stop()
    return out


def _progress(kind: str, what: str, result: dict[str, Any]) -> None:
    print(f"  [{kind}] {what}: done", file=sys.stderr, flush=True)


# -- report ---------------------------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths, strict=True)))
    body = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows
    ]
    return "\n".join([line, "  ".join("-" * w for w in widths), *body])


def _err(result: dict[str, Any]) -> str:
    return str(result["errors"]) + (f" ({result['first_error']})" if result["errors"] else "")


def report(results: dict[str, dict[str, Any]], timing: Timing) -> None:
    print("\nHeartbeats/s: POST /sessions/{id}/heartbeat, one request per heartbeat, one session per connection")
    print(f"({SMALL:,} stored sessions; {timing.duration_s:g} s window after {timing.warmup_s:g} s warm-up)\n")
    rows = []
    for kind, res in results.items():
        for c, r in res["heartbeats"].items():
            rows.append(
                [
                    kind,
                    str(c),
                    f"{r['rate']:,.0f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p95_ms']:.1f}",
                    f"{r['writes_per_commit']:.1f}",
                    f"{r['server_cpu']:.0%}",
                    f"{r['client_cpu']:.0%}",
                    _err(r),
                ]
            )
    print(
        _table(
            [
                "database",
                "concurrency",
                "heartbeats/s",
                "p50 ms",
                "p95 ms",
                "writes/commit",
                "server CPU",
                "client CPU",
                "errors",
            ],
            rows,
        )
    )

    print(f"\nHeartbeats/s at concurrency {READER_CONCURRENCY} beside two readers listing {LARGE:,} sessions in a loop")
    print(f"(the prototype fell to {PROTOTYPE_WITH_READERS} in this case)\n")
    rows = []
    for kind, res in results.items():
        alone, busy = res["large_alone"], res["large_readers"]
        rows.append(
            [
                kind,
                f"{alone['rate']:,.0f}",
                f"{busy['rate']:,.0f}",
                f"{busy['rate'] / alone['rate']:.2f}" if alone["rate"] else "-",
                f"{busy['p95_ms']:.1f}",
                f"{busy['reads'] / timing.duration_s:.1f}",
                f"{busy['read_p50_ms']:.0f}",
                _err(alone) if alone["errors"] else _err(busy),
            ]
        )
    print(
        _table(
            [
                "database",
                "without readers",
                "with 2 readers",
                "ratio",
                "heartbeat p95 ms",
                "listings/s",
                "listing p50 ms",
                "errors",
            ],
            rows,
        )
    )

    print("\nGET /sessions (all live sessions), one request at a time; target p50 < 100 ms at 10,000\n")
    rows = []
    for kind, res in results.items():
        for stored, r in res["latency"].items():
            rows.append(
                [
                    kind,
                    f"{stored:,}",
                    str(r["n"]),
                    f"{r['p50_ms']:.1f}",
                    f"{r['p95_ms']:.1f}",
                    f"{r['size_mb']:.1f}",
                    str(r["errors"]),
                ]
            )
    print(_table(["database", "stored", "requests", "p50 ms", "p95 ms", "response MB", "errors"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="Shorter windows (about a minute in all).")
    parser.add_argument("--databases", default="sqlite,postgresql", help="Comma-separated: sqlite, postgresql.")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    timing = Timing(0.3, 1.5, 1.5) if args.quick else Timing(0.5, 4.0, 3.0)

    print("Server throughput benchmark")
    print(f"command:        {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine:        nproc={os.cpu_count()}, {sys.platform}, Python {sys.version.split()[0]}")
    print(f"load generator: {load_generator_name()}")

    results: dict[str, dict[str, Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool,
    ):
        workdir = Path(tmp)
        for kind in kinds:
            if kind == "sqlite":
                results[kind] = bench_database(kind, f"sqlite:///{workdir / 'bench.sqlite3'}", workdir, pool, timing)
            elif kind == "postgresql":
                from sqlalchemy.engine import make_url

                name = f"sm_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
                asyncio.run(pg_admin(f'CREATE DATABASE "{name}"', PG_ADMIN_URL))
                try:
                    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
                    results[kind] = bench_database(kind, url, workdir, pool, timing)
                finally:
                    asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', PG_ADMIN_URL))
            else:
                parser.error(f"unknown database {kind!r}")
        for kind, res in results.items():
            print(f"server ({kind}): {res['command']}")
    report(results, timing)


if __name__ == "__main__":
    main()
