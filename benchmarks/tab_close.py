"""Tab close latency: from closing a tab to its session ended, ours beside Bokeh's own, in the same run.

How: a real monitor server (SQLite in a temporary folder) and two real ``panel serve`` of
``benchmarks/tab_close_app.py`` (which imports nothing of ours and writes ``time.time()`` when its
session is destroyed): one with ``--setup "$(session-monitor setup-script)"``, one plain. Tabs are
opened in headless Chromium, then closed a batch at a time; for each, from ``time.time()`` just before
``page.close()``:

- ``ours: ended`` — the monitor lists the session as ended (``browser_lost``), polled every 10 ms;
- ``ours: destroyed`` — the app's ``on_session_destroyed`` ran (our liveness destroys the session);
- ``Bokeh: destroyed`` — the same callback on the plain server (unused-session lifetime + its check).

Default disconnect grace (2 s): a closed tab's websocket closes with 1001 ("going away"), which ends
the session without waiting for it. Figures only, no assertions.

Run: ``.venv/bin/python benchmarks/tab_close.py [--closes 30] [--batch 10]``
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from benchmarks.kill_latency import percentile, start_monitor, start_panel, stop  # noqa: E402
from playwright.sync_api import BrowserContext, Page, sync_playwright  # noqa: E402
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, free_port, wait_until  # noqa: E402

APP = ROOT / "benchmarks" / "tab_close_app.py"
SETUP = ROOT / "src" / "session_monitor" / "client" / "setup_hook.py"
BOKEH_WAIT_S = 45.0
TARGET = "p95 < 0.3 s"


def open_tabs(context: BrowserContext, url: str, count: int) -> list[tuple[Page, str]]:
    tabs = []
    for _ in range(count):
        page = context.new_page()
        page.goto(url)
        pane = page.locator("pre", has_text=re.compile(r"^session \S+$"))
        pane.wait_for()
        tabs.append((page, pane.inner_text().split()[1]))
    return tabs


def read_stamp(stamp: Path, timeout_s: float, interval_s: float) -> float:
    """The time the app wrote into ``stamp``, once the file is there and written (it may be seen empty first)."""

    def written() -> float | None:
        text = stamp.read_text() if stamp.exists() else ""
        return float(text) if text else None

    return float(wait_until(written, timeout_s=timeout_s, interval_s=interval_s))


def row(name: str, values: list[float]) -> str:
    if not values:
        return f"  {name:20}    0"
    return (
        f"  {name:20}{len(values):>5}{percentile(values, 0.5):>9.0f}{percentile(values, 0.95):>9.0f}"
        f"{max(values):>9.0f}{statistics.fmean(values):>9.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--closes", type=int, default=30, help="Tabs closed on each server (default 30).")
    parser.add_argument("--batch", type=int, default=10, help="Tabs open at a time (default 10).")
    args = parser.parse_args()
    print(__doc__.split("\n\n")[0])
    ended_ms: list[float] = []
    ours_destroyed_ms: list[float] = []
    bokeh_ms: list[float] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        monitor, env, stamps = start_monitor(tmp, "TAB_CLOSE_STAMPS")
        ours_port, bokeh_port = free_port(), free_port()
        ours = start_panel(APP, ours_port, env, tmp / "ours.log", ("--setup", str(SETUP)))
        bokeh = start_panel(APP, bokeh_port, env, tmp / "bokeh.log")
        api = httpx.Client(base_url=monitor.url, timeout=10.0)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                context = browser.new_context()
                context.set_default_timeout(20_000)
                # Bokeh's sessions first: they take the longest to go, and are timed while ours are measured.
                bokeh_tabs = open_tabs(context, f"http://127.0.0.1:{bokeh_port}/tab_close_app", args.closes)
                bokeh_closed = {}
                for page, sid in bokeh_tabs:
                    bokeh_closed[sid] = time.time()
                    page.close()
                done = 0
                while done < args.closes:
                    batch = open_tabs(context, f"http://127.0.0.1:{ours_port}/tab_close_app", args.batch)
                    for _page, sid in batch:
                        wait_until(lambda sid=sid: api.get(f"/sessions/{sid}").status_code == 200, timeout_s=15)
                    for page, sid in batch:
                        closed_at = time.time()
                        page.close()
                        try:
                            wait_until(
                                lambda sid=sid: api.get(f"/sessions/{sid}").json()["end_reason"] == "browser_lost",
                                timeout_s=15,
                                interval_s=0.01,
                            )
                        except AssertionError as exc:
                            problems.append(f"{sid}: {exc}")
                            continue
                        ended_ms.append((time.time() - closed_at) * 1000)
                        stamp = stamps / f"destroyed-{sid}"
                        ours_destroyed_ms.append((read_stamp(stamp, 15, 0.01) - closed_at) * 1000)
                        done += 1
                deadline = time.time() + BOKEH_WAIT_S
                for sid, closed_at in bokeh_closed.items():
                    stamp = stamps / f"destroyed-{sid}"
                    try:
                        destroyed_at = read_stamp(stamp, max(0.1, deadline - time.time()), 0.05)
                    except AssertionError:
                        problems.append(f"Bokeh session {sid} not destroyed within {BOKEH_WAIT_S:.0f} s")
                        continue
                    bokeh_ms.append((destroyed_at - closed_at) * 1000)
                browser.close()
        finally:
            api.close()
            stop(ours)
            stop(bokeh)
            monitor.stop()

    print(f"\n  {'tab closed → ...':20}{'n':>5}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'mean ms':>9}")
    print(row("ours: ended", ended_ms))
    print(row("ours: destroyed", ours_destroyed_ms))
    print(row("Bokeh: destroyed", bokeh_ms))
    print(f"  target: {TARGET} (ours: ended)")
    for problem in problems:
        print(f"  not measured: {problem}")


if __name__ == "__main__":
    main()
