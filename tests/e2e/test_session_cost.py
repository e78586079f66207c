"""What each session costs, measured in a real ``panel serve`` with six sessions open in headless Chromium.

- A blocking session is named: a button callback that blocks the loop 2 s shows on its row as the most
  loop time in the last minute within 3 s of its end, and each of the five other rows added < 5 % of it
  meanwhile (the window also holds the loop time of building each page).
- Under ``--num-threads 4`` the same work runs on Panel's thread pool and is attributed to its session (what
  each session added while the blocker ran: the column is a running total that includes building the page).
- Document data: a session holding a 200 MB DataFrame in a Tabulator shows 200 MB ± 20 %; the others ~0.
- Leftovers: a session whose tab closed while a thread it started runs is flagged on its process within
  15 s, with the thread's function name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import BrowserContext, Page
from rich.console import Console
from tests.helpers import wait_until

from session_monitor import top

if TYPE_CHECKING:
    from tests.e2e.conftest import Monitor, PanelServer

pytestmark = pytest.mark.e2e

APP = "costly"
SESSIONS = 6
DATA_BYTES = 200_000_000


def _open(context: BrowserContext, panel: PanelServer) -> tuple[Page, str]:
    page = context.new_page()
    page.goto(panel.app_url(APP))
    text = page.get_by_text(re.compile(r"^session \S+$")).first
    text.wait_for()
    return page, text.inner_text().split(" ", 1)[1]


def _rows(monitor: Monitor) -> dict[str, dict[str, Any]]:
    return {row["session_id"]: row for row in monitor.sessions(app=APP)}


def _open_six(context: BrowserContext, panel: PanelServer, monitor: Monitor) -> dict[str, Page]:
    pages: dict[str, Page] = {}
    for _ in range(SESSIONS):
        page, sid = _open(context, panel)
        pages[sid] = page
    # Every row measured once (a full measurement each sync interval) before the test's work starts.
    wait_until(lambda: all((_rows(monitor).get(sid) or {}).get("cost") for sid in pages), timeout_s=20)
    return pages


def _click(page: Page, label: str) -> None:
    page.get_by_role("button", name=label).click()


def _work_s(row: dict[str, Any], field: str) -> float:
    return float(row["cost"][field])


def _check_blocking_named(
    monitor: Monitor, pages: dict[str, Page], field: str, since: dict[str, float] | None = None
) -> dict[str, Any]:
    """The blocker's ``field`` is the most, each other row's < 5 % of it (counted from ``since`` when given)."""
    blocker, page = next(iter(pages.items()))
    base = since or {}
    _click(page, "Block")
    page.get_by_text("blocked 1").wait_for(timeout=15_000)
    ended = time.monotonic()
    wait_until(
        lambda: _work_s(_rows(monitor)[blocker], field) - base.get(blocker, 0.0) >= 1.9, timeout_s=3.0, interval_s=0.1
    )
    # Within 3 s of the stall
    shown_after_s = time.monotonic() - ended
    rows = _rows(monitor)
    most = _work_s(rows[blocker], field) - base.get(blocker, 0.0)
    others = {sid: _work_s(rows[sid], field) - base.get(sid, 0.0) for sid in pages if sid != blocker}
    assert all(value < 0.05 * most for value in others.values()), (most, others, [rows[sid]["cost"] for sid in pages])
    slowest = rows[blocker]["cost"]["slowest_callback"]
    assert slowest["qualname"].endswith(".block_two_seconds") and slowest["duration_s"] >= 1.9, slowest
    return {"shown_after_s": shown_after_s, "most": most, "others": others}


def _check_leftover_flagged(monitor: Monitor, page: Page, leaver: str) -> None:
    _click(page, "Start thread")
    page.get_by_text("thread started").wait_for()
    wait_until(lambda: _rows(monitor)[leaver]["cost"]["threads_alive"] == 1, timeout_s=10)
    page.close()
    closed = time.monotonic()

    def flagged() -> list[dict[str, Any]]:
        agents = monitor.http.get("/agents").json()["agents"]
        return [x for agent in agents for x in agent.get("leftovers", ()) if x["session_id"] == leaver]

    found = wait_until(flagged, timeout_s=15, interval_s=0.2)
    assert time.monotonic() - closed <= 15
    assert [(x["kind"], x["name"]) for x in found] == [("thread", "cruncher")], found
    assert found[0]["function"].endswith(".keep_crunching"), found
    assert 'session_monitor_leftovers{kind="thread"} 1.0' in monitor.http.get("/metrics").text


def _check_document_data(monitor: Monitor, pages: dict[str, Page], holder: str) -> None:
    _click(pages[holder], "Load data")
    pages[holder].get_by_text("loaded").wait_for(timeout=30_000)

    def measured() -> bool:
        rows = _rows(monitor)
        return 0.8 * DATA_BYTES <= (rows[holder]["cost"]["doc_data_bytes"] or 0) <= 1.2 * DATA_BYTES

    wait_until(measured, timeout_s=15)
    rows = _rows(monitor)
    for sid in pages:
        if sid != holder:
            assert (rows[sid]["cost"]["doc_data_bytes"] or 0) < 1_000_000, rows[sid]["cost"]


def _check_top_lists_the_blocker_first(monitor: Monitor, blocker: str) -> None:
    """``session-monitor top``'s frame, from these real rows: the blocking session on the first line."""
    console = Console(width=250, record=True, color_system=None)
    console.print(top.render(list(_rows(monitor).values()), "l"))
    lines = console.export_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("SESSION"))
    assert lines[header + 1].startswith(blocker[:12]), lines
    assert "block_two_seconds" in lines[header + 1]


def test_blocking_session_named_document_data_measured_and_leftovers_flagged(
    panel_server: Callable[..., PanelServer], monitor: Monitor, context: BrowserContext
) -> None:
    panel = panel_server(APP + ".py")
    pages = _open_six(context, panel, monitor)
    leaver_page, leaver = _open(context, panel)  # a seventh, whose tab closes with its thread running
    _check_leftover_flagged(monitor, leaver_page, leaver)
    # Building each page cost its session some loop time (tens of ms; over 0.1 s on a loaded machine), still in
    # the last minute's window: what the test compares is what each session added from here. All of it is
    # younger than the window, so none of it leaves the window while the test runs.
    rows = _rows(monitor)
    before = {sid: _work_s(rows[sid], "loop_seconds_1m") for sid in pages}
    _check_blocking_named(monitor, pages, "loop_seconds_1m", since=before)
    _check_top_lists_the_blocker_first(monitor, next(iter(pages)))
    _check_document_data(monitor, pages, list(pages)[1])


def test_thread_pool_work_is_attributed_to_its_session(
    panel_server: Callable[..., PanelServer], monitor: Monitor, context: BrowserContext
) -> None:
    panel = panel_server(APP + ".py", args=("--num-threads", "4"))
    pages = _open_six(context, panel, monitor)
    # Building each page ran on the pool too (tens of ms, over 0.1 s on a loaded machine); the column is a total,
    # so what the test compares is what each session added from here.
    rows = _rows(monitor)
    before = {sid: _work_s(rows[sid], "pool_thread_seconds") for sid in pages}
    _check_blocking_named(monitor, pages, "pool_thread_seconds", since=before)
    rows = _rows(monitor)
    blocker = next(iter(pages))
    # The loop was not blocked: the 2 s ran on a pool thread.
    assert _work_s(rows[blocker], "loop_seconds_total") < 1.0, rows[blocker]["cost"]
