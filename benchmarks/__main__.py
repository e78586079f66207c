"""One benchmark entry point: ``python -m benchmarks [--quick]`` prints one table of the figures that matter.

It runs the pieces of the other benchmark modules as functions (each module also runs alone, with more detail):

- ``ingest``: session heartbeats/s batched (agent sync) vs per-session (prototype path) on one server, both
  stores; 100,000 sessions at a 5 s sync interval (p95 sync latency); ``GET /sessions`` at 100,000; RSS.
- ``listing``: ``GET /sessions`` at 10,000 live sessions idle and beside 10 prototype-style heartbeat writers, and
  at 100,000, on both stores, with the prototype-style baseline server (``prototype_server``) measured beside them.
- ``replicas``: kill latency through the agent protocol on one replica and across two (PostgreSQL).
- ``client_overhead``: the cost of ``with tracker.task("x")`` on the caller's thread.

Each row says what it is compared with (a baseline measured in the same run, the prototype, or a target).
Figures vary by about +-20 % between runs on a shared 2-core machine. No assertions.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import client_overhead, ingest, listing, replicas
from benchmarks.server_throughput import _table

STORES = ("sqlite", "postgresql")


def task_cost(quick: bool, workdir: Path) -> dict[str, float]:
    """Median µs of ``with tracker.task("x")`` and of an empty context manager, in a fresh client process."""
    from tests.helpers import ServerProcess

    server = ServerProcess(
        {"SESSION_MONITOR_DATABASE_URL": f"sqlite:///{workdir / 'client.sqlite3'}"}, log_path=workdir / "client.log"
    ).start()
    try:
        result = client_overhead.run_child(
            "task", server.url, str(client_overhead.ITERATIONS), str(1.0 if quick else client_overhead.MIN_SECONDS)
        )
    finally:
        server.stop()
    return {
        "task_us": result['with tracker.task("x")']["median_us"],
        "empty_us": result["with EmptyContext()"]["median_us"],
    }


def _ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:,.1f}x" if baseline else "-"


def rows(results: dict[str, Any]) -> list[list[str]]:
    ing: dict[str, dict[str, Any]] = results["ingest"]

    def both(fmt: str, get: Any) -> list[str]:
        return [fmt.format(get(ing[k])) if k in ing else "-" for k in STORES]

    out: list[list[str]] = []
    per = {k: ing[k]["per_session"]["rate"] for k in ing}
    batched = {k: ing[k]["batched"]["session_beats_per_s"] for k in ing}
    out.append(
        [
            "ingest, per-session heartbeats/s (1 request + 1 commit each, c=50)",
            *both("{:,.0f}", lambda r: r["per_session"]["rate"]),
            "(baseline)",
            "-",
        ]
    )
    out.append(
        [
            f"ingest, batched session heartbeats/s ({ingest.AGENTS} agents x {ingest.SESSIONS_PER_AGENT:,})",
            *both("{:,.0f}", lambda r: r["batched"]["session_beats_per_s"]),
            "per-session, same run; target >= 50x",
            " / ".join(_ratio(batched[k], per[k]) for k in STORES if k in ing),
        ]
    )
    out.append(
        [
            f"{ingest.AGENTS * ingest.SESSIONS_PER_AGENT:,} sessions, {ingest.INTERVAL_S:g} s sync: sync p95 ms",
            *both("{:.1f}", lambda r: r["interval"]["p95_ms"]),
            "target < 100 ms",
            " / ".join(f"{ing[k]['interval']['p95_ms'] / 100:.2f}x target" for k in STORES if k in ing),
        ]
    )
    out.append(
        [
            "  then: the agents' live / stale sessions listed",
            *both("{}", lambda r: f"{r['live']:,} / {r['stale']}"),
            f"{ingest.AGENTS * ingest.SESSIONS_PER_AGENT:,} / 0 expected",
            "-",
        ]
    )
    out.extend(listing.rows(results["listing"], [k for k in STORES if k in ing]))
    out.append(
        [
            f"GET /sessions p50 ms at {ingest.AGENTS * ingest.SESSIONS_PER_AGENT + 1_000:,} (agents' sessions)",
            *both("{:,.0f}", lambda r: r["listing"]["p50_ms"]),
            "-",
            "-",
        ]
    )
    kills = results.get("kills")
    if kills:
        for label, key in (("one replica", "one_replica"), ("across 2 replicas", "across_replicas")):
            k = kills[key]
            out.append(
                [
                    f"kill latency p50 / p95 ms, {label}",
                    "-",
                    f"{k['p50_ms']:.1f} / {k['p95_ms']:.1f}",
                    "prototype: next heartbeat, mean 15 s",
                    _ratio(15_000, k["p50_ms"]) + " faster",
                ]
            )
    task = results.get("task")
    if task:
        out.append(
            [
                'client: with tracker.task("x") median us',
                f"{task['task_us']:.2f}",
                "-",
                f"empty context manager {task['empty_us']:.2f} us",
                _ratio(task["task_us"], task["empty_us"]),
            ]
        )
    out.append(
        [
            "server RSS MB per 10,000 sessions",
            *both("{:.1f}", lambda r: (r["rss_loaded_mb"] - r["rss_start_mb"]) / (r["sessions"] / 10_000)),
            "-",
            "-",
        ]
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--quick", action="store_true", help="Shorter windows and fewer kills (a few minutes).")
    parser.add_argument("--databases", default=",".join(STORES), help="Comma-separated: sqlite, postgresql.")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.databases.split(",") if k.strip()]
    os.environ.setdefault("SESSION_MONITOR_DASHBOARD_PORT", "0")  # servers without their dashboard child
    timing = ingest.QUICK if args.quick else ingest.FULL
    print(f"command: {shlex.join(['python', '-m', 'benchmarks', *sys.argv[1:]])}; machine: nproc={os.cpu_count()}")
    results: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool,
    ):
        workdir = Path(tmp)
        results["ingest"] = ingest.run(kinds, timing, pool, workdir)
        results["listing"] = listing.run(kinds, listing.QUICK if args.quick else listing.FULL, pool, workdir)
        if "postgresql" in kinds:
            results["kills"] = replicas.measure(10 if args.quick else 40, workdir)
            print("  kill latency: done", file=sys.stderr, flush=True)
        results["task"] = task_cost(args.quick, workdir)
        print("  client task() cost: done", file=sys.stderr, flush=True)
    print()
    print(_table(["measure", "SQLite", "PostgreSQL", "baseline", "ratio"], rows(results)))


if __name__ == "__main__":
    main()
