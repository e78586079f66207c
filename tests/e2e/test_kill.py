"""Killing sessions of real Panel apps open in headless Chromium, through the monitor server's REST API."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect
from tests.helpers import wait_until

if TYPE_CHECKING:  # pytest imports the conftest under its own name: only its types are borrowed here
    from tests.e2e.conftest import Monitor, PanelServer

WebsocketEvents = Callable[[Page], dict[str, list[Any]]]

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
"""Screenshots of the last run (gitignored)."""
SCREENSHOT = ROOT / "docs" / "screenshots" / "kill-notification.png"
"""Committed copy of the kill notice; refreshed when missing or with ``SESSION_MONITOR_UPDATE_SCREENSHOTS=1``."""

REVIVAL_WATCH_S = 5.0
"""How long after its kill a session id is watched for coming back through the browser's reconnection."""
REBUILT_WATCH_S = 2.0
"""How long, at least, it is watched after the reconnection re-ran the app under that id."""

SESSION_TIMEOUT_S = 15.0


def notice(page: Page, text: str) -> Locator:
    """The notification toast containing ``text`` (Panel's notification area uses notyf)."""
    return page.locator(".notyf__toast", has_text=text).first


PANEL_CONNECTION_LOST = "Server connection lost"
"""Panel's own ``disconnect_notification``: a killed page must not show it beside our notice."""


def ended_veil(page: Page) -> Locator:
    """The grey veil the browser component puts over a page whose session is gone."""
    return page.locator("div.sm-session-ended")


def assert_ended_cleanly(page: Page, text: str, controls: list[Locator]) -> Locator:
    """The page of an ended session: exactly one notice (with ``text``), greyed, every given control disabled.

    The veil is put up on the same browser event that opens Panel's connection-lost toast: once it is
    visible, every toast that event opens is there.
    """
    expect(ended_veil(page)).to_be_visible()
    toast = notice(page, text)
    expect(toast).to_be_visible()
    expect(page.locator(".notyf__toast")).to_have_count(1)
    expect(page.get_by_text(PANEL_CONNECTION_LOST)).to_have_count(0)
    for control in controls:
        expect(control).to_be_disabled()
    assert page.evaluate("document.documentElement.classList.contains('sm-session-ended')")
    return toast


def open_app(context: BrowserContext, panel: PanelServer, app: str) -> Page:
    page = context.new_page()
    page.goto(panel.app_url(app))
    page.get_by_text("session ").first.wait_for()
    return page


def live_session_ids(monitor: Monitor, app: str) -> set[str]:
    return {s["session_id"] for s in monitor.sessions(app=app)}


def wait_for_new_session(monitor: Monitor, app: str, known: set[str]) -> str:
    """The id of the one live session of ``app`` not in ``known``, once the server lists it."""
    new = wait_until(lambda: live_session_ids(monitor, app) - known, timeout_s=SESSION_TIMEOUT_S)
    assert len(new) == 1, f"one page opened, several sessions appeared: {new}"
    return str(next(iter(new)))


def settle_animations(page: Page) -> None:
    """Wait until the page's animations (the toast sliding in) are over, so a screenshot shows the final look."""
    page.wait_for_function(
        """() => {
            const roots = [document];
            const walk = (root) => root.querySelectorAll("*").forEach((e) => {
                if (e.shadowRoot) { roots.push(e.shadowRoot); walk(e.shadowRoot); }
            });
            walk(document);
            return roots.every((r) => r.getAnimations().every((a) => a.playState !== "running"));
        }"""
    )


def save_screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    if name == SCREENSHOT.name and (not SCREENSHOT.exists() or os.environ.get("SESSION_MONITOR_UPDATE_SCREENSHOTS")):
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOT)


def test_kill_with_reason_notifies_runs_hooks_and_ends_killed(
    monitor: Monitor,
    apps: PanelServer,
    context: BrowserContext,
    websocket_events: WebsocketEvents,
) -> None:
    page = open_app(context, apps, "tracked")

    sessions = wait_until(lambda: monitor.sessions(app="tracked"), timeout_s=SESSION_TIMEOUT_S)
    assert len(sessions) == 1, sessions
    session = sessions[0]
    sid = session["session_id"]
    assert page.get_by_text(f"session {sid}").is_visible(), "the server's id is not the page's Bokeh session id"
    assert session["host"] == socket.gethostname()
    assert session["pid"] == apps.pid
    assert session["user_id"] == "e2e"
    assert session["state"] == "idle"

    # The task runs on a thread the button callback started: it must report as this session, not a new one.
    page.get_by_role("button", name="Run task").click()
    page.get_by_text("started").wait_for()
    running = wait_until(lambda: (s := monitor.session(sid))["status"] == "running" and s, timeout_s=SESSION_TIMEOUT_S)
    assert running["current_task"] == "crunching numbers"
    assert running["state"] == "running"
    assert [s["session_id"] for s in monitor.sessions(app="tracked")] == [sid]

    assert monitor.kill(sid, reason="maintenance window") == {"status": "kill_requested"}

    notice(page, "maintenance window").wait_for()
    toast = assert_ended_cleanly(page, "maintenance window", [page.get_by_role("button", name="Run task")])
    assert toast.inner_text().strip() == "This session was ended by an administrator: maintenance window"
    wait_until(lambda: apps.marker("on_kill", sid).exists(), timeout_s=SESSION_TIMEOUT_S)
    wait_until(lambda: apps.marker("destroyed", sid).exists(), timeout_s=SESSION_TIMEOUT_S)
    wait_until(lambda: monitor.ended_as(sid) == "killed", timeout_s=SESSION_TIMEOUT_S)
    ended = monitor.session(sid)
    assert ended["state"] == "ended"
    assert ended["kill_reason"] == "maintenance window"
    assert sid not in live_session_ids(monitor, "tracked")
    closed = wait_until(lambda: websocket_events(page)["closed"], timeout_s=SESSION_TIMEOUT_S)
    assert closed[0]["code"] == 1001, closed
    assert "maintenance window" in closed[0]["reason"]

    settle_animations(page)
    save_screenshot(page, "kill-notification.png")


def test_kill_without_reason_tells_user_even_without_notifications(
    monitor: Monitor,
    apps: PanelServer,
    context: BrowserContext,
    websocket_events: WebsocketEvents,
) -> None:
    page = open_app(context, apps, "plain")
    sid = wait_for_new_session(monitor, "plain", set())

    assert monitor.kill(sid) == {"status": "kill_requested"}

    notice(page, "ended by an administrator").wait_for()
    assert_ended_cleanly(page, "This session was ended by an administrator.", [])
    wait_until(lambda: monitor.ended_as(sid) == "killed", timeout_s=SESSION_TIMEOUT_S)
    assert monitor.session(sid)["kill_reason"] is None
    closed = wait_until(lambda: websocket_events(page)["closed"], timeout_s=SESSION_TIMEOUT_S)
    assert (closed[0]["code"], closed[0]["reason"]) == (1001, "This session was ended by an administrator.")
    settle_animations(page)
    save_screenshot(page, "kill-notification-plain.png")


CATCH_CONNECTION_LOST = """
() => Bokeh.documents[0].on_event("connection_lost", (_, event) => { window.__lost = event })
"""
"""Keeps Bokeh's last ``connection_lost`` event in the page: its ``reconnect()`` forces a reconnection."""


def test_a_killed_template_page_is_greyed_with_its_widgets_disabled(
    monitor: Monitor, panel_server: Callable[..., PanelServer], context: BrowserContext
) -> None:
    setup = str(ROOT / "src" / "session_monitor" / "client" / "setup_hook.py")
    panel = panel_server("template.py", args=("--setup", setup))
    page = open_app(context, panel, "template")
    sid = wait_for_new_session(monitor, "template", set())
    refresh = page.get_by_role("button", name="Refresh")
    expect(refresh).to_be_enabled()

    monitor.kill(sid, reason="template test")

    controls = [refresh, page.locator("select").first, page.get_by_role("textbox").first]
    assert_ended_cleanly(page, "template test", controls)
    wait_until(lambda: monitor.ended_as(sid) == "killed", timeout_s=SESSION_TIMEOUT_S)
    page.wait_for_timeout(1000)  # the toast's slide-in (the template keeps an animation running forever)
    save_screenshot(page, "kill-template.png")


def test_reconnecting_page_does_not_revive_a_killed_session(
    monitor: Monitor,
    apps: PanelServer,
    context: BrowserContext,
    websocket_events: WebsocketEvents,
) -> None:
    page = open_app(context, apps, "reconnect")
    sid = wait_for_new_session(monitor, "reconnect", set())
    page.evaluate(CATCH_CONNECTION_LOST)

    monitor.kill(sid, reason="reconnect test")
    killed_at = time.monotonic()
    wait_until(lambda: monitor.ended_as(sid) == "killed", timeout_s=SESSION_TIMEOUT_S)
    # The kill turned the page's reconnection off: one notice, no "reconnecting" prompt, and no new websocket
    # (Bokeh's first attempt is immediate, so one would be open well within this second).
    assert_ended_cleanly(page, "reconnect test", [])
    page.wait_for_timeout(1000)
    assert len(websocket_events(page)["opened"]) == 1, websocket_events(page)
    assert page.get_by_text(re.compile("re-connect|Reconnecting now|Attempting to reconnect")).count() == 0

    # A browser reconnecting all the same (forced here) re-runs the app under that id; the id stays killed.
    page.evaluate("window.__lost.reconnect()")
    # Watch the id for REVIVAL_WATCH_S after the kill, and for REBUILT_WATCH_S at least after the browser's
    # reconnection made the app body run again under the same id (without that, the watch proves nothing).
    rebuilt_at: float | None = None
    polls = 0
    while True:
        now = time.monotonic()
        if rebuilt_at is None and len(list(apps.markers.glob(f"built-*-{sid}"))) >= 2:
            assert len(websocket_events(page)["opened"]) >= 2
            rebuilt_at = now
        if rebuilt_at is None:
            assert now - killed_at < SESSION_TIMEOUT_S, "the page never reconnected: nothing was tested"
        elif now >= max(killed_at + REVIVAL_WATCH_S, rebuilt_at + REBUILT_WATCH_S):
            break
        one = monitor.session(sid)
        assert (one["state"], one["end_reason"]) == ("ended", "killed"), f"killed session came back: {one}"
        assert sid not in live_session_ids(monitor, "reconnect"), "killed session listed as live again"
        polls += 1
        time.sleep(0.1)  # the watch's polling interval, not a wait for an event
    assert polls >= 20
    # Nor does the session live on in the browser: every websocket the page (re)opened was closed again.
    wait_until(lambda: len((ws := websocket_events(page))["closed"]) == len(ws["opened"]), timeout_s=SESSION_TIMEOUT_S)
    expect(ended_veil(page)).to_be_visible()
    save_screenshot(page, "kill-reconnect.png")


def test_kill_all_ends_every_session_of_the_app_and_no_other(
    monitor: Monitor,
    apps: PanelServer,
    context: BrowserContext,
    websocket_events: WebsocketEvents,
) -> None:
    tracked_pages, tracked_ids = [], set()
    for _ in range(2):
        tracked_pages.append(open_app(context, apps, "tracked"))
        tracked_ids.add(wait_for_new_session(monitor, "tracked", tracked_ids))
    plain_page = open_app(context, apps, "plain")
    plain_id = wait_for_new_session(monitor, "plain", set())

    assert monitor.kill_all("tracked") == {"killed_count": 2}

    for sid in tracked_ids:
        wait_until(lambda sid=sid: monitor.ended_as(sid) == "killed", timeout_s=SESSION_TIMEOUT_S)
        wait_until(lambda sid=sid: apps.marker("on_kill", sid).exists(), timeout_s=SESSION_TIMEOUT_S)
    for page in tracked_pages:
        notice(page, "ended by an administrator").wait_for()
        assert websocket_events(page)["closed"], "a killed tab kept its websocket"

    # Both kills have been carried out; a wrong kill of the plain session would have come with them.
    plain = monitor.session(plain_id)
    assert plain["state"] != "ended" and plain["end_reason"] is None, plain
    assert live_session_ids(monitor, "plain") == {plain_id}
    assert websocket_events(plain_page)["closed"] == []
    assert plain_page.get_by_text("ended by an administrator").count() == 0
