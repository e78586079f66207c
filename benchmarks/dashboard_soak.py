"""Dashboard soak: does an open dashboard page (and the dashboard process) grow while sessions churn?

What runs: a real ``session-monitor serve`` (SQLite, temporary folder), ``--sessions`` live sessions (default
5,000) held by two simulated Panel processes through the agent protocol, a real ``session-monitor dashboard``
and one headless Chromium page on it (50 rows shown). While ``--phase churn`` (default) runs, 20 sessions start
and 20 end every second; ``--phase steady`` only heartbeats (no status change, no kill: the periodic updates
alone).

Every ``--sample-s`` seconds the page is garbage-collected (``HeapProfiler.collectGarbage`` over the Chrome
DevTools Protocol) and sampled (``Performance.getMetrics``: ``JSHeapUsedSize``, ``Nodes``; the smallest of
three readings), and so is the dashboard process's RSS (psutil). After ``--warmup-minutes`` the slopes (least
squares over the samples) are printed beside the targets: JS heap < 0.5 MiB/min, DOM nodes flat, dashboard
RSS < 0.2 MiB/min.

Everything talks to 127.0.0.1 only; everything started here is stopped by its own PID at the end.

Run: ``.venv/bin/python benchmarks/dashboard_soak.py [--minutes 30] [--warmup-minutes 2] [--sessions 5000]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from playwright.sync_api import CDPSession, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.dashboard_update import Agent, load  # noqa: E402
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, ServerProcess, free_port, wait_until  # noqa: E402

TARGET_HEAP_MIB_PER_MIN = 0.5
TARGET_NODES_PER_MIN = 0.0
"""Flat: a slope within a few nodes a minute of zero (a table page is redrawn in place, not appended to)."""
TARGET_RSS_MIB_PER_MIN = 0.2


def slope_per_min(times_s: list[float], values: list[float]) -> float:
    if len(times_s) < 2:
        return float("nan")
    return statistics.linear_regression(times_s, values).slope * 60.0


def page_sample(cdp: CDPSession, page: Page, readings: int = 3) -> tuple[float, float]:
    """JS heap (MiB) and DOM nodes after a garbage collection, the smallest of ``readings`` taken 0.5 s apart: a
    table redraw in flight holds its old rows for a moment, which is not growth."""
    found = []
    for _ in range(readings):
        cdp.send("HeapProfiler.collectGarbage")
        metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
        found.append((metrics["JSHeapUsedSize"] / 2**20, metrics["Nodes"]))
        page.wait_for_timeout(500)
    return min(h for h, _ in found), min(n for _, n in found)


def start_dashboard(api_url: str, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_MONITOR_")}
    port = free_port()
    with open(log_path, "wb") as log:
        board = subprocess.Popen(
            [sys.executable, "-m", "session_monitor", "dashboard", "--api-url", api_url, "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return board, f"http://127.0.0.1:{port}/"


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="measured minutes, after the warm-up")
    parser.add_argument("--warmup-minutes", type=float, default=2.0)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--phase", choices=("churn", "steady", "status"), default="churn")
    parser.add_argument("--sample-s", type=float, default=15.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dashboard-soak-"))
    server = ServerProcess(
        {"SESSION_MONITOR_DATABASE_URL": f"sqlite:///{tmp / 'm.sqlite3'}", "SESSION_MONITOR_DASHBOARD_PORT": "0"},
        log_path=tmp / "server.log",
    ).start()
    agents = [Agent(server.url, i) for i in range(2)]
    for agent in agents:
        agent.add(args.sessions // 2, spread_s=8 * 3600)
        agent.sync([], full=True)
    board, url = start_dashboard(server.url, tmp / "dashboard.log")
    halt = threading.Event()
    worker = threading.Thread(target=load, args=(agents, args.phase, halt), daemon=True)
    try:
        wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, timeout_s=90, interval_s=0.2)
        board_ps = psutil.Process(board.pid)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(url)
            page.locator(".tabulator-row").first.wait_for(timeout=60_000)
            worker.start()
            print(f"{args.sessions:,} sessions, phase {args.phase}; warm-up {args.warmup_minutes:g} min, then "
                  f"{args.minutes:g} min sampled every {args.sample_s:g} s (logs in {tmp})", flush=True)  # fmt: skip
            started = time.monotonic()
            end = started + (args.warmup_minutes + args.minutes) * 60
            times, heap, nodes, rss = [], [], [], []
            while time.monotonic() < end:
                page.wait_for_timeout(args.sample_s * 1000)
                t = time.monotonic() - started
                sample = (*page_sample(cdp, page), board_ps.memory_info().rss / 2**20)
                print(f"  t={t / 60:5.1f} min  JS heap {sample[0]:7.1f} MiB  DOM nodes {sample[1]:7.0f}  "
                      f"dashboard RSS {sample[2]:7.1f} MiB", flush=True)  # fmt: skip
                if t >= args.warmup_minutes * 60:
                    times.append(t)
                    heap.append(sample[0])
                    nodes.append(sample[1])
                    rss.append(sample[2])
            browser.close()
        for name, values, unit, target in (
            ("JS heap", heap, "MiB/min", f"< {TARGET_HEAP_MIB_PER_MIN:g}"),
            ("DOM nodes", nodes, "nodes/min", "flat (~0)"),
            ("dashboard RSS", rss, "MiB/min", f"< {TARGET_RSS_MIB_PER_MIN:g}"),
        ):
            first, last = (values[0], values[-1]) if values else (0.0, 0.0)
            print(f"{name:14} {slope_per_min(times, values):+8.2f} {unit:9} (target {target}) over "
                  f"{len(times)} samples, {first:.1f} -> {last:.1f}")  # fmt: skip
    finally:
        halt.set()
        if worker.is_alive():
            worker.join(timeout=10)
        stop(board)
        server.stop()


if __name__ == "__main__":
    main()
