"""Session limits under a burst: N sessions opened at once against an app limit across 2 Panel processes.

    python benchmarks/session_limits.py [--sessions 40] [--limit 20] [--procs 2] [--rounds 3]

A real monitor server (SQLite), a real ``panel serve --num-procs 2 --setup <tracking>`` of a small app, and
``--sessions`` websocket sessions opened at the same instant with Bokeh's own client (``bokeh.client``, what a
browser tab does after its page request: the websocket makes the session). Not Chromium tabs: 40 renderer
processes on this shared 2-core machine would spread the opening over many seconds, which measures the browser
instead of the limit. Prints, per round and in total, how many sessions were admitted and refused, and the
overshoot (admitted beyond the limit), with each process's share. No assertions.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.helpers import ServerProcess, free_port, wait_until  # noqa: E402

APP = """
import panel as pn
pn.extension()
pn.Column("# Limited", pn.pane.Str("a session")).servable()
"""
SETUP = ROOT / "src" / "session_monitor" / "client" / "setup_hook.py"


def _open_all(url: str, n: int) -> list[Any]:
    """``n`` Bokeh client sessions started at the same instant (a barrier), each kept open."""
    import panel.models  # noqa: F401  (the client must know Panel's models to read an admitted session's document)
    from bokeh.client import pull_session

    barrier = threading.Barrier(n)

    def one(_: int) -> Any:
        barrier.wait()
        try:
            return pull_session(url=url)
        except Exception as exc:  # a refused session still connects; a failure is reported, not hidden
            return exc

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def _round(api: httpx.Client, panel_url: str, app: str, n: int, settle_s: float) -> dict[str, Any]:
    refused_before = _refused(api, app)
    started = time.perf_counter()
    clients = _open_all(f"{panel_url}/{app}", n)
    opened_s = time.perf_counter() - started
    failed = sum(isinstance(c, Exception) for c in clients)
    errors = sorted({f"{type(c).__name__}: {c}"[:200] for c in clients if isinstance(c, Exception)})

    def settled() -> bool:
        return len(_live(api, app)) + _refused(api, app) - refused_before >= n - failed

    wait_until(settled, timeout_s=60, interval_s=0.1)
    time.sleep(settle_s)  # a late end (a refusal at connect time) would still show
    live = _live(api, app)
    refused = _refused(api, app) - refused_before
    per_pid: dict[int, int] = {}
    for s in live:
        per_pid[s["pid"]] = per_pid.get(s["pid"], 0) + 1
    for c in clients:
        if not isinstance(c, Exception):
            c.close()
    wait_until(lambda: not _live(api, app), timeout_s=90, interval_s=0.2)
    return {"admitted": len(live), "refused": refused, "failed": failed, "per_pid": per_pid, "opened_s": opened_s,
            "errors": errors}  # fmt: skip


def _live(api: httpx.Client, app: str) -> list[dict[str, Any]]:
    return api.get("/sessions", params={"app": app}).raise_for_status().json()["sessions"]  # type: ignore[no-any-return]


def _refused(api: httpx.Client, app: str) -> int:
    return int(api.get("/history", params={"app": app, "reason": "refused", "limit": 1}).json()["total"])


def _stop(panel: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``panel serve`` and the workers it forked (by PID), SIGKILL what is left."""
    import psutil

    try:
        workers = psutil.Process(panel.pid).children(recursive=True)
    except psutil.Error:
        workers = []
    for proc in (panel, *workers):
        with contextlib.suppress(ProcessLookupError, psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs([psutil.Process(panel.pid), *workers] if panel.poll() is None else workers, 20)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    panel.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle-s", type=float, default=1.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "limited.py").write_text(APP)
        monitor = ServerProcess(
            {"SESSION_MONITOR_DATABASE_URL": f"sqlite:///{work / 'monitor.sqlite3'}"}, log_path=work / "monitor.log"
        ).start(timeout_s=90)
        port = free_port()
        env = {**os.environ, "SESSION_MONITOR_URL": monitor.url, "PYTHONPATH": str(ROOT)}
        log = (work / "panel.log").open("wb")
        panel = subprocess.Popen(
            [sys.executable, "-m", "panel", "serve", str(work / "limited.py"), "--port", str(port),
             "--address", "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
             "--num-procs", str(args.procs), "--setup", str(SETUP), "--liveness"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        panel_url = f"http://127.0.0.1:{port}"
        try:
            api = httpx.Client(base_url=monitor.url, timeout=30)
            api.put("/policies", json={"apps": {"limited": {"max_sessions": args.limit}}}).raise_for_status()
            wait_until(lambda: httpx.get(f"{panel_url}/liveness").status_code == 200, timeout_s=90, interval_s=0.2)
            # Warm up: every process has tracked a session (its agent runs and has the policies) before the burst.
            warm = _open_all(f"{panel_url}/limited", 4 * args.procs)
            wait_until(lambda: len({s["pid"] for s in _live(api, "limited")}) == args.procs, timeout_s=60)
            for c in warm:
                if not isinstance(c, Exception):
                    c.close()
            wait_until(lambda: not _live(api, "limited"), timeout_s=90, interval_s=0.2)

            rounds = [_round(api, panel_url, "limited", args.sessions, args.settle_s) for _ in range(args.rounds)]
        finally:
            _stop(panel)
            monitor.stop()
            log.close()

    header = f"{args.sessions} sessions at once, app limit {args.limit}, {args.procs} processes"
    print(header)
    print(f"{'round':>5} {'opened in':>10} {'admitted':>9} {'refused':>8} {'failed':>7} {'overshoot':>10}  per process")
    for i, r in enumerate(rounds, 1):
        overshoot = max(0, r["admitted"] - args.limit)
        shares = ", ".join(str(n) for _, n in sorted(r["per_pid"].items()))
        cells = f"{r['admitted']:>9} {r['refused']:>8} {r['failed']:>7} {overshoot:>10}"
        print(f"{i:>5} {r['opened_s']:>9.2f}s {cells}  {shares}")
    for error in sorted({e for r in rounds for e in r["errors"]}):
        print(f"failed to open: {error}")
    worst = max(max(0, r["admitted"] - args.limit) for r in rounds)
    print(f"worst overshoot: {worst} (bound: {args.limit * (args.procs - 1)}, each process admits at most the limit)")


if __name__ == "__main__":
    main()
