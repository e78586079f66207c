"""Browser liveness against a real ``panel serve --num-procs 2 --setup <our script>`` and headless Chromium.

The apps are tracked by the setup script alone (``untracked.py`` imports nothing of ours; ``tracked.py``
also calls ``get_tracker`` and must get the same tracker). Timeouts are shortened through the
environment; latencies are measured by ``benchmarks/tab_close.py``, not asserted here.
"""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from playwright.sync_api import BrowserContext, Page
from tests.e2e.raw_chromium import RawChromium
from tests.helpers import wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Monitor, PanelServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = ROOT / "src" / "session_monitor" / "client" / "setup_hook.py"
DEAD_SOCKET_S = 4.0
"""Shortened dead-socket timeout of these tests (60 s by default)."""
BACKGROUND_S = 3 * DEAD_SOCKET_S
"""How long tabs stay hidden or frozen: three dead-socket timeouts, the compressed "10 minutes"."""
WAIT_S = 30.0
SESSION_TEXT = re.compile(r"^session\s+([\w-]+)$")
"""What both apps show: ``session <Bokeh session id>``."""


def start(panel_server: Callable[..., PanelServer]) -> PanelServer:
    return panel_server(
        "untracked.py",
        "tracked.py",
        num_procs=2,
        args=("--setup", str(SETUP_SCRIPT)),
        env={"SESSION_MONITOR_DEAD_SOCKET_S": str(DEAD_SOCKET_S)},
    )


def page_session_id(page: Page) -> str:
    text = page.get_by_text(SESSION_TEXT).first.text_content() or ""
    found = SESSION_TEXT.search(text.strip())
    assert found, f"no session id in {text!r}"
    return found.group(1)


def live(monitor: Monitor) -> dict[str, dict[str, Any]]:
    return {s["session_id"]: s for s in monitor.sessions()}


def worker_pids(panel: PanelServer) -> set[int]:
    return {child.pid for child in psutil.Process(panel.pid).children()}


def test_sessions_of_unmodified_apps_under_num_procs_end_when_tabs_close(
    monitor: Monitor, panel_server: Callable[..., PanelServer], context: BrowserContext
) -> None:
    panel = start(panel_server)
    pages: dict[str, Page] = {}
    apps: dict[str, str] = {}
    for i in range(10):
        app = "untracked" if i % 2 else "tracked"
        page = context.new_page()
        page.goto(panel.app_url(app))
        sid = page_session_id(page)
        pages[sid], apps[sid] = page, app

    # Exactly the ten sessions with a browser: no copy from the other worker, none counted twice.
    sessions = wait_until(lambda: len(s := live(monitor)) >= 10 and s, timeout_s=WAIT_S)
    assert set(sessions) == set(pages)
    workers = worker_pids(panel)
    assert len(workers) == 2
    for sid, session in sessions.items():
        assert session["host"] == socket.gethostname()
        assert session["pid"] in workers, session
        assert session["app_name"] == apps[sid]
        # tracked.py asks get_tracker(app_name="tracked", user_id="e2e"): the setup script's tracker, adopted.
        assert session["user_id"] == ("e2e" if apps[sid] == "tracked" else None)
    wait_until(lambda: all(s["visibility"] == "visible" for s in live(monitor).values()), timeout_s=WAIT_S)

    closing = list(pages)[:5]
    for sid in closing:
        pages.pop(sid).close()
    for sid in closing:
        wait_until(lambda sid=sid: monitor.ended_as(sid) == "browser_lost", timeout_s=WAIT_S)
    assert set(live(monitor)) == set(pages)

    # A kill reaches the page of an app that enabled no notifications, through the setup script's tracker.
    killed, killed_page = next(iter(pages.items()))
    monitor.kill(killed, reason="liveness test")
    killed_page.locator(".notyf__toast", has_text="ended by an administrator").first.wait_for()
    wait_until(lambda: monitor.ended_as(killed) == "killed", timeout_s=WAIT_S)

    # A reload is a new session; the old one is ended as the tab's browser left it.
    old, page = list(pages.items())[1]
    page.reload()
    new = page_session_id(page)
    assert new != old
    wait_until(lambda: monitor.ended_as(old) == "browser_lost", timeout_s=WAIT_S)
    wait_until(lambda: new in live(monitor), timeout_s=WAIT_S)
    assert len(live(monitor)) == 4


def test_background_tabs_live_on_and_a_stopped_browser_is_found(
    monitor: Monitor, panel_server: Callable[..., PanelServer]
) -> None:
    panel = start(panel_server)
    browser = RawChromium()
    try:
        hidden = browser.open(panel.app_url("untracked"))
        frozen = browser.open(panel.app_url("tracked"))
        # One tab per app: each app's one live session is that tab's.
        ids = {
            name: wait_until(lambda app=app: [s["session_id"] for s in monitor.sessions(app=app)], WAIT_S)[0]
            for name, app in (("hidden", "untracked"), ("frozen", "tracked"))
        }

        front = browser.open("about:blank")
        browser.bring_to_front(front)
        wait_until(lambda: hidden.js("document.visibilityState") == "hidden", timeout_s=WAIT_S)
        wait_until(lambda: live(monitor)[ids["hidden"]]["visibility"] == "hidden", timeout_s=WAIT_S)
        frozen.send("Page.setWebLifecycleState", state="frozen")

        # Three dead-socket timeouts in the background: both answer pings, so both stay live.
        deadline = time.monotonic() + BACKGROUND_S
        while time.monotonic() < deadline:
            sessions = live(monitor)
            for name, sid in ids.items():
                assert sid in sessions, f"the {name} tab's session was ended: {monitor.session(sid)}"
                assert sessions[sid]["state"] != "disconnected", sessions[sid]
            time.sleep(0.5)  # the watch's polling interval, not a wait for an event
        frozen.send("Page.setWebLifecycleState", state="active")

        # A stopped browser keeps its sockets open but answers no ping: both sessions end as browser_lost.
        browser.signal_tree(signal.SIGSTOP)
        for sid in ids.values():
            wait_until(lambda sid=sid: monitor.ended_as(sid) == "browser_lost", timeout_s=4 * DEAD_SOCKET_S + WAIT_S)
    finally:
        browser.stop()
