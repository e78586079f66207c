"""Session limits and culling exemptions (``PUT /policies``) against real ``panel serve --setup`` and Chromium.

Users come from Panel's basic auth (``pn.state.user``, which the ``--setup`` hook records), each logged in in
its own browser context.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page
from tests.helpers import wait_until

if TYPE_CHECKING:  # pytest imports the conftest under its own name: only its types are borrowed here
    from tests.e2e.conftest import Monitor, PanelServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SETUP = str(ROOT / "src" / "session_monitor" / "client" / "setup_hook.py")
TIMEOUT_S = 20.0
PASSWORDS = {"alice": "alice-password-1", "bob": "bob-password-22"}
COOKIE_SECRET = "limits-e2e-cookie-secret-0123456789"
PER_USER_REFUSAL = "You already have 2 sessions of this app open: close one to open another."
PROCESS_REFUSAL = "This server is at its limit of 1 sessions; please try again in a few minutes."


def _set_policies(monitor: Monitor, policies: dict[str, Any]) -> None:
    response = monitor.http.put("/policies", json=policies)
    assert response.status_code == 200, response.text


def _history(monitor: Monitor, app: str) -> list[dict[str, Any]]:
    response = monitor.http.get("/history", params={"app": app})
    response.raise_for_status()
    return response.json()["sessions"]  # type: ignore[no-any-return]


def _refused(monitor: Monitor, app: str) -> int:
    return len([s for s in _history(monitor, app) if s["end_reason"] == "refused"])


def _live(monitor: Monitor, app: str, user: str | None = None) -> list[dict[str, Any]]:
    return [s for s in monitor.sessions(app=app) if user is None or s["user_id"] == user]


@pytest.fixture
def login(browser: Browser, tmp_path: Path) -> Iterator[Callable[[PanelServer, str], BrowserContext]]:
    """``login(panel, user)``: a browser context logged in to ``panel`` as ``user`` (closed at teardown)."""
    contexts: list[BrowserContext] = []

    def open_as(panel: PanelServer, user: str) -> BrowserContext:
        ctx = browser.new_context(viewport={"width": 900, "height": 400})
        ctx.set_default_timeout(TIMEOUT_S * 1000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.goto(f"{panel.url}/login")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", PASSWORDS[user])
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_url(lambda url: "/login" not in url)
        page.close()
        return ctx

    try:
        yield open_as
    finally:
        for ctx in contexts:
            ctx.close()


@pytest.fixture(scope="module")
def authed_panel(
    monitor: Monitor, markers_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PanelServer]:
    """One ``panel serve --setup`` of ``limited.py`` and ``idle.py`` (idle culling after 3 s) behind basic auth."""
    from conftest import PanelServer  # type: ignore[import-not-found]  # (pytest imports conftest under this name)

    folder = tmp_path_factory.mktemp("authed")
    credentials = folder / "credentials.json"
    credentials.write_text(json.dumps(PASSWORDS))
    args = ("--setup", SETUP, "--basic-auth", str(credentials), "--cookie-secret", COOKIE_SECRET)
    env = {"SESSION_MONITOR_IDLE_TIMEOUT_S": "idle=3"}
    server = PanelServer(("limited.py", "idle.py"), monitor.url, markers_dir, folder / "panel.log", args=args, env=env)
    try:
        monitor.wait_ready()
        yield server.wait_ready()  # PanelServer is untyped here (conftest import)
    finally:
        server.stop()


def _open(ctx: BrowserContext, panel: PanelServer, app: str, query: str = "") -> Page:
    page = ctx.new_page()
    page.goto(f"{panel.app_url(app)}{query}")
    return page


def test_a_users_third_tab_is_refused_another_user_opens_and_closing_one_lets_a_new_one_in(
    monitor: Monitor, authed_panel: PanelServer, login: Callable[[PanelServer, str], BrowserContext]
) -> None:
    _set_policies(monitor, {"apps": {"limited": {"max_sessions_per_user": 2}}})
    panel = authed_panel
    alice = login(panel, "alice")

    tabs = []
    for n in (1, 2):
        tabs.append(_open(alice, panel, "limited"))
        tabs[-1].get_by_text("Limited app").wait_for()
        wait_until(lambda n=n: len(_live(monitor, "limited", "alice")) == n, timeout_s=TIMEOUT_S)  # type: ignore[misc]

    third = _open(alice, panel, "limited")
    third.get_by_text(PER_USER_REFUSAL).wait_for()
    refused = wait_until(
        lambda: [s for s in _history(monitor, "limited") if s["end_reason"] == "refused"], timeout_s=TIMEOUT_S
    )
    assert [(s["user_id"], s["end_reason"]) for s in refused] == [("alice", "refused")]
    assert not panel.marker("ran", refused[0]["session_id"]).exists()  # the app's code never ran for it
    assert third.get_by_text("Limited app").count() == 0
    assert len(_live(monitor, "limited", "alice")) == 2

    bob = _open(login(panel, "bob"), panel, "limited")
    bob.get_by_text("Limited app").wait_for()
    wait_until(lambda: len(_live(monitor, "limited", "bob")) == 1, timeout_s=TIMEOUT_S)

    tabs[0].close()
    wait_until(lambda: len(_live(monitor, "limited", "alice")) == 1, timeout_s=TIMEOUT_S)
    again = _open(alice, panel, "limited")
    again.get_by_text("Limited app").wait_for()
    wait_until(lambda: len(_live(monitor, "limited", "alice")) == 2, timeout_s=TIMEOUT_S)
    assert len([s for s in _history(monitor, "limited") if s["end_reason"] == "refused"]) == 1


def test_a_process_limit_holds_in_each_of_two_processes(
    monitor: Monitor, panel_server: Callable[..., PanelServer], browser: Browser
) -> None:
    _set_policies(monitor, {"max_sessions_per_process": 1})
    panel = panel_server("tracked.py", num_procs=2, args=("--setup", SETUP))
    ctx = browser.new_context(viewport={"width": 900, "height": 400})
    ctx.set_default_timeout(TIMEOUT_S * 1000)
    try:
        opened = 4
        for n in range(1, opened + 1):
            page = ctx.new_page()
            page.goto(panel.app_url("tracked"))
            wait_until(
                lambda n=n: len(monitor.sessions(app="tracked")) + _refused(monitor, "tracked") == n,  # type: ignore[misc]
                timeout_s=TIMEOUT_S,
            )
        live = monitor.sessions(app="tracked")
        by_pid: dict[int, int] = {}
        for s in live:
            by_pid[s["pid"]] = by_pid.get(s["pid"], 0) + 1
        assert all(n == 1 for n in by_pid.values()) and 1 <= len(live) <= 2, by_pid
        assert _refused(monitor, "tracked") == opened - len(live)
        refused_page = [p for p in ctx.pages if p.get_by_text(PROCESS_REFUSAL).count()]
        assert len(refused_page) == opened - len(live)
    finally:
        ctx.close()
    _set_policies(monitor, {})


def test_exempt_sessions_survive_the_idle_timeout_that_ends_their_neighbour(
    monitor: Monitor, authed_panel: PanelServer, login: Callable[[PanelServer, str], BrowserContext]
) -> None:
    _set_policies(monitor, {"exempt_users": ["bob"]})
    panel = authed_panel
    alice, bob = login(panel, "alice"), login(panel, "bob")
    # The exempt ones first: when the neighbour is culled, they have been idle for longer.
    _open(alice, panel, "idle", "?exempt=1").get_by_text("Limited app").wait_for()
    _open(bob, panel, "idle").get_by_text("Limited app").wait_for()
    exempt = wait_until(lambda: len(s := _live(monitor, "idle")) == 2 and s, timeout_s=TIMEOUT_S)
    _open(alice, panel, "idle").get_by_text("Limited app").wait_for()
    neighbour = wait_until(
        lambda: [s for s in _live(monitor, "idle") if s["session_id"] not in {e["session_id"] for e in exempt}],
        timeout_s=TIMEOUT_S,
    )[0]
    wait_until(lambda: monitor.ended_as(neighbour["session_id"]) == "expired", timeout_s=TIMEOUT_S)
    assert {s["session_id"] for s in _live(monitor, "idle")} == {e["session_id"] for e in exempt}
    wait_until(lambda: all(s["exempt"] for s in _live(monitor, "idle")), timeout_s=TIMEOUT_S)  # a flag on the row
    assert not monitor.session(neighbour["session_id"])["exempt"]
    _set_policies(monitor, {})
