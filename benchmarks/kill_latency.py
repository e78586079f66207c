"""Kill latency: from the kill request to the app's ``on_kill`` having run and the page's websocket closed.

How: a real monitor server (``session-monitor serve``, SQLite in a temporary folder) and a real
``panel serve`` of ``benchmarks/kill_bench_app.py``, whose ``on_kill`` writes ``time.time()`` to a
file. Sessions are opened a few at a time in headless Chromium; each page records, through an
init script, ``performance.timeOrigin + performance.now()`` when its websocket opens and closes.
Once the server lists a batch's sessions and their websockets are open, each is killed in turn
(``POST /sessions/{id}/kill``), the next only after the previous one's figures are in:

- ``on_kill ran``: the time written by the callback minus the time just before the POST was sent;
- ``websocket closed``: the page's close event minus the same time.

Every clock is this machine's wall clock. The seed learned of a kill only at its next heartbeat
poll (up to 30 s). Figures only, no assertions; the run stops after ``--kills`` kills or ~150 s.

Run: ``.venv/bin/python benchmarks/kill_latency.py [--kills 60] [--batch 5]``
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, ServerProcess, free_port, wait_until  # noqa: E402

APP = ROOT / "benchmarks" / "kill_bench_app.py"
WEBSOCKET_RECORDER = """
(() => {
  const now = () => performance.timeOrigin + performance.now();
  const record = { opened: [], closed: [] };
  window.__killBench = record;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("open", () => record.opened.push(now()));
      this.addEventListener("close", (e) => record.closed.push({ at: now(), code: e.code }));
    }
  };
})();
"""
TIME_BUDGET_S = 150.0
KILL_TIMEOUT_S = 15.0
SEED_ANCHOR = "up to 30 s (next heartbeat poll)"
TARGET = "p95 < 1 s"


def start_monitor(tmp: Path, stamps_var: str) -> tuple[ServerProcess, dict[str, str], Path]:
    """A monitor on SQLite in ``tmp``, and the environment of a benchmark app reporting to it.

    The app writes its time stamps into the folder it finds in ``stamps_var`` (returned as the third item).
    """
    stamps = tmp / "stamps"
    stamps.mkdir()
    monitor = ServerProcess(
        {"SESSION_MONITOR_DATABASE_URL": f"sqlite:///{tmp / 'monitor.sqlite3'}"}, log_path=tmp / "monitor.log"
    ).start()
    env = {**os.environ, "SESSION_MONITOR_URL": monitor.url, stamps_var: str(stamps)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return monitor, env, stamps


def start_panel(
    app: Path, port: int, env: dict[str, str], log_path: Path, extra_args: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """``panel serve app`` on 127.0.0.1:port with ``env``, once its ``/liveness`` answers (the benchmarks' apps)."""
    command = [sys.executable, "-m", "panel", "serve", str(app), "--address", "127.0.0.1", "--port", str(port)]
    command += ["--allow-websocket-origin", f"127.0.0.1:{port}", "--liveness", *extra_args]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"panel serve exited: {log_path.read_text()[-2000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/liveness", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, timeout_s=60, interval_s=0.1)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def open_session(page: Page, url: str) -> str:
    """Load the app; return its session id once its websocket is open."""
    page.goto(url)
    pane = page.locator("pre", has_text=re.compile(r"^session \S+$"))
    pane.wait_for()
    page.wait_for_function("window.__killBench.opened.length >= 1")
    return pane.inner_text().split()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=60, help="How many sessions to kill (default 60).")
    parser.add_argument("--batch", type=int, default=5, help="Sessions opened at a time (default 5).")
    args = parser.parse_args()
    print(__doc__.split("\n\n")[0])
    started = time.monotonic()
    on_kill_ms: list[float] = []
    closed_ms: list[float] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        monitor, env, stamps = start_monitor(tmp, "KILL_BENCH_STAMPS")
        port = free_port()
        panel = start_panel(APP, port, env, tmp / "panel.log")
        api = httpx.Client(base_url=monitor.url, timeout=10.0)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context()
                context.set_default_timeout(20_000)
                context.add_init_script(WEBSOCKET_RECORDER)
                done = 0
                while done < args.kills and time.monotonic() - started < TIME_BUDGET_S:
                    batch: list[tuple[Page, str]] = []
                    for _ in range(min(args.batch, args.kills - done)):
                        page = context.new_page()
                        batch.append((page, open_session(page, f"http://127.0.0.1:{port}/kill_bench_app")))
                    for _page, sid in batch:
                        wait_until(lambda sid=sid: api.get(f"/sessions/{sid}").status_code == 200, timeout_s=15)
                    for page, sid in batch:
                        stamp = stamps / f"on_kill-{sid}"
                        sent = time.time()
                        api.post(f"/sessions/{sid}/kill", json={"reason": "benchmark"}).raise_for_status()
                        try:
                            wait_until(stamp.exists, timeout_s=KILL_TIMEOUT_S, interval_s=0.002)
                            page.wait_for_function(
                                "window.__killBench.closed.length >= 1", timeout=KILL_TIMEOUT_S * 1000
                            )
                        except Exception as exc:
                            problems.append(f"{sid}: {exc}")
                            continue
                        on_kill_ms.append((float(stamp.read_text()) - sent) * 1000)
                        closed: dict[str, Any] = page.evaluate("window.__killBench.closed[0]")
                        closed_ms.append(closed["at"] - sent * 1000)
                        done += 1
                    for page, _sid in batch:
                        page.close()
                browser.close()
        except Exception:
            print((tmp / "panel.log").read_text()[-3000:], file=sys.stderr)
            raise
        finally:
            api.close()
            stop(panel)
            monitor.stop()

    print(f"\n{done} kills in {time.monotonic() - started:.0f} s (sessions opened {args.batch} at a time)")
    print(f"  {'kill request → ...':22}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'mean ms':>9}")
    for name, values in (("on_kill ran", on_kill_ms), ("websocket closed", closed_ms)):
        if values:
            print(
                f"  {name:22}{len(values):>5}{percentile(values, 0.5):>9.0f}{percentile(values, 0.95):>9.0f}"
                f"{max(values):>9.0f}{statistics.fmean(values):>9.0f}"
            )
    print(f"  seed anchor: {SEED_ANCHOR}; target: {TARGET}")
    for problem in problems:
        print(f"  not measured: {problem}")


if __name__ == "__main__":
    main()
