"""What a shared-pool worker costs when the program's main module is Panel's command line (``panel serve``).

    .venv/bin/python benchmarks/pool_workers.py [--runs 3] [--size 2]

Each run is a fresh process whose main module imports ``panel.command`` first, as the ``panel`` console script
does, then starts a pool of ``--size`` workers and times its first job (``imported_modules``, answered once a
worker is up). Two variants, alternated in the same session:

- *main re-run* (the baseline): multiprocessing's default for spawned children, each worker re-running the
  parent's main module, so importing Panel and Bokeh;
- *pool* (what the pool does): its workers start without the parent's main module.

Printed per variant: first job's latency (median), modules in a worker, worker RSS (MiB, mean), and whether
Panel was imported. No assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

MAIN = textwrap.dedent(
    """
    import json, sys, time
    import panel.command  # what the `panel` console script imports before it serves anything
    import psutil
    from session_monitor import SessionClient, pool

    if __name__ == "__main__":
        if sys.argv[1] == "main re-run":
            import multiprocessing.spawn
            from session_monitor.pool import engine
            multiprocessing.spawn.get_preparation_data = engine._spawn_preparation_data
        from session_monitor.pool.examples import imported_modules
        pool.configure(size=int(sys.argv[2]))
        started = time.perf_counter()
        jobs = pool.for_session(SessionClient.get_tracker("benchmark"))
        modules = jobs.submit(imported_modules).result(300)
        first_s = time.perf_counter() - started
        rss = [psutil.Process(pid).memory_info().rss for pid in pool.status().worker_pids]
        print(json.dumps({"first_s": first_s, "modules": len(modules), "panel": "panel" in modules,
                          "rss_mib": sum(rss) / len(rss) / 2**20}))
    """
)

VARIANTS = ("main re-run", "pool")


def one_run(script: Path, variant: str, size: int) -> dict[str, Any]:
    env = {**os.environ, "SESSION_MONITOR_URL": "http://127.0.0.1:9"}  # no server: the agent stays offline
    out = subprocess.run(
        [sys.executable, str(script), variant, str(size)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
        cwd=script.parent,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--size", type=int, default=2, help="pool worker processes")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "panel_like_main.py"
        script.write_text(MAIN)
        for _ in range(args.runs):
            for variant in VARIANTS:
                results[variant].append(one_run(script, variant, args.size))
    print(f"pool of {args.size} workers, main module imports panel.command; {args.runs} runs per variant")
    for variant, runs in results.items():
        print(
            f"{variant:<12} first job {statistics.median(r['first_s'] for r in runs):6.2f} s  "
            f"modules {statistics.median(r['modules'] for r in runs):5.0f}  "
            f"worker RSS {statistics.mean(r['rss_mib'] for r in runs):5.1f} MiB  "
            f"panel imported: {any(r['panel'] for r in runs)}"
        )


if __name__ == "__main__":
    main()
