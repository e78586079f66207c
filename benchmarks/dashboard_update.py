"""Dashboard update cycle with 10,000 live sessions: server time and bytes per cycle, beside a full reload.

What runs: a real ``session-monitor serve`` (SQLite, temporary folder), 10,000 sessions registered through the
agent protocol by two simulated Panel processes (5,000 each, heartbeated by a sync every 5 s), a real
``session-monitor dashboard`` (debug logging: it logs each cycle's figures) and headless Chromium on the page.

Phases, each ``--seconds`` long (default 10):

- ``steady``: sessions only heartbeat (the usual case);
- ``status``: 1 % of the sessions (100) change status and task every second;
- ``churn``: every second 20 sessions start and 20 end.

Per phase: the dashboard's refresh (``GET /sessions`` time and bytes, then diff and apply), the rows and cells it
changed, and the bytes its websocket sent the browser per second (the frames Chromium received). Beside them:
a full reload of the page (document + websocket until the table shows), and the full list the prototype sent on
every refresh. Figures only; they vary with the machine.

Run: ``.venv/bin/python benchmarks/dashboard_update.py [--sessions 10000] [--seconds 10]``
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, ServerProcess, free_port, wait_until  # noqa: E402

APPS = ["reports", "forecast", "etl", "explorer", "admin"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Agent:
    """A simulated Panel process: its sessions, synced through ``POST /agents/{id}/sync``."""

    def __init__(self, api: str, index: int) -> None:
        self.api, self.agent_id = api, f"bench-agent-{index}-{uuid.uuid4().hex[:8]}"
        self.info = {"host": f"bench-host-{index}", "pid": 1000 + index, "command": "panel serve app.py",
                     "started_at": now_iso()}  # fmt: skip
        self.sessions: dict[str, dict[str, Any]] = {}
        self.http = httpx.Client(base_url=api, timeout=60)

    def add(self, n: int, spread_s: float = 0.0) -> list[dict[str, Any]]:
        added = []
        for _ in range(n):
            sid = uuid.uuid4().hex
            # Sessions of a real day started at different times (else every duration ticks at once).
            started = (datetime.now(UTC) - timedelta(seconds=random.uniform(0, spread_s))).isoformat()
            s = {"session_id": sid, "app_name": APPS[len(self.sessions) % len(APPS)],
                 "user_id": f"user{len(self.sessions) % 300}", "status": "idle", "started_at": started}  # fmt: skip
            self.sessions[sid] = s
            added.append(s)
        return added

    def sync(self, changed: list[dict[str, Any]], ended: list[str] = (), full: bool = False) -> None:  # type: ignore[assignment]
        body = {
            "agent": self.info,
            "full": full,
            "sessions": list(self.sessions.values()) if full else changed,
            "ended": [{"session_id": s, "reason": "closed", "ended_at": now_iso()} for s in ended],
        }
        self.http.post(f"/agents/{self.agent_id}/sync", json=body).raise_for_status()


def load(agents: list[Agent], phase: str, stop: threading.Event) -> None:
    """Every second, change what ``phase`` says; heartbeat every agent every 5 s."""
    tick = 0
    while not stop.wait(1.0):
        tick += 1
        for agent in agents:
            changed: list[dict[str, Any]] = []
            ended: list[str] = []
            if phase == "status":
                for s in list(agent.sessions.values())[(tick * 50) % 5000 :][:50]:
                    running = s["status"] != "running"
                    s.update(status="running" if running else "idle", current_task=f"task {tick}" if running else None,
                             task_started_at=now_iso() if running else None)  # fmt: skip
                    changed.append(s)
            elif phase == "churn":
                changed = agent.add(10)
                ended = list(agent.sessions)[:10]
                for sid in ended:
                    del agent.sessions[sid]
            if changed or ended or tick % 5 == 0:
                agent.sync(changed, ended)


def cycles_from_log(path: Path, since: int) -> tuple[list[dict[str, Any]], int]:
    lines = path.read_text(errors="replace").splitlines()
    found = [
        ast.literal_eval(line.split("dashboard cycle ", 1)[1]) for line in lines[since:] if "dashboard cycle " in line
    ]
    return found, len(lines)


def summarise(name: str, cycles: list[dict[str, Any]], ws_bytes: float, seconds: float) -> str:
    if not cycles:
        return f"{name:8} no cycles logged"
    med, mean = statistics.median, statistics.fmean
    api_ms, api_mib = med(c["api_s"] for c in cycles) * 1000, med(c["api_bytes"] for c in cycles) / 2**20
    apply_ms = med(c["apply_s"] for c in cycles) * 1000
    apply_max_ms = max(c["apply_s"] for c in cycles) * 1000
    return (
        f"{name:8} {len(cycles):3d} cycles | GET /sessions {api_ms:6.1f} ms {api_mib:5.2f} MiB | "
        f"rows+diff+apply {apply_ms:6.1f} ms (max {apply_max_ms:6.1f}) | rows changed "
        f"{mean(c['changed_rows'] for c in cycles):5.0f} +{mean(c['added'] for c in cycles):.0f} "
        f"-{mean(c['removed'] for c in cycles):.0f} per cycle | to browser {ws_bytes / len(cycles) / 1024:5.1f} KiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dashboard-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_MONITOR_")}
    server = ServerProcess(
        {"SESSION_MONITOR_DATABASE_URL": f"sqlite:///{tmp / 'm.sqlite3'}", "SESSION_MONITOR_DASHBOARD_PORT": "0"},
        log_path=tmp / "server.log",
    ).start()
    agents = [Agent(server.url, i) for i in range(2)]
    for agent in agents:
        agent.add(args.sessions // 2, spread_s=8 * 3600)
        agent.sync([], full=True)
    port = free_port()
    log_path = tmp / "dashboard.log"
    with open(log_path, "wb") as log:
        board = subprocess.Popen(
            [sys.executable, "-m", "session_monitor", "-v", "dashboard", "--api-url", server.url, "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, timeout_s=90, interval_s=0.2)
        full = httpx.get(f"{server.url}/sessions", timeout=60)
        print(f"{args.sessions:,} live sessions; the full list (what the prototype moved every refresh): "
              f"{len(full.content) / 2**20:.2f} MiB")  # fmt: skip
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            received = [0]
            page.on(
                "websocket", lambda ws: ws.on("framereceived", lambda d: received.__setitem__(0, received[0] + len(d)))
            )
            documents = [0]
            page.on(
                "response",
                lambda r: (
                    documents.__setitem__(0, documents[0] + len(r.body()))
                    if r.request.resource_type == "document"
                    else None
                ),
            )
            started = time.perf_counter()
            page.goto(url)
            page.locator(".tabulator-row").first.wait_for(timeout=60_000)
            load_s = time.perf_counter() - started
            page.wait_for_timeout(2000)
            print(
                f"full reload: {load_s:.2f} s to the first rows, document {documents[0] / 1024:.0f} KiB + "
                f"websocket {received[0] / 1024:.0f} KiB (the whole page, its table holding the first 50 rows)"
            )
            _, mark = cycles_from_log(log_path, 0)
            for phase in ("steady", "status", "churn"):
                stop = threading.Event()
                worker = threading.Thread(target=load, args=(agents, phase, stop), daemon=True)
                received[0] = 0
                _, mark = cycles_from_log(log_path, 0)
                worker.start()
                page.wait_for_timeout(args.seconds * 1000)
                stop.set()
                worker.join()
                cycles, mark = cycles_from_log(log_path, mark)
                print(summarise(phase, cycles, received[0], args.seconds))
            browser.close()
    finally:
        board.terminate()
        try:
            board.wait(timeout=20)
        except subprocess.TimeoutExpired:
            board.kill()
            board.wait()
        server.stop()


if __name__ == "__main__":
    main()
