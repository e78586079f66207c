"""Dashboard roles in headless Chromium: a viewer sees no Kill controls; an operator of app A sees Kill on A's
rows only, and its kill is audited under its name and the dashboard's token owner.

One API (a named admin token owned by ``dashboard``) and one dashboard (users with roles) for the module; the
browser is the session's.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from tests.e2e.dashboard_support import Api, Dashboard
from tests.e2e.test_dashboard import SCREENSHOTS, UPDATE_TIMEOUT_MS, row_of, sessions_table
from tests.helpers import serve_in_thread

from session_monitor.server import Settings, create_app

pytestmark = pytest.mark.e2e

DASHBOARD_TOKEN = "dashboard-named-admin-token-e2e"
APP_A = f"app-a-{uuid.uuid4().hex[:6]}"
APP_B = f"app-b-{uuid.uuid4().hex[:6]}"
USERS: dict[str, dict[str, Any]] = {
    "vera": {"password": "viewer-password-e2e", "role": "viewer"},
    "olga": {"password": "operator-password-e2e", "role": "operator", "apps": [APP_A]},
}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path_factory.mktemp('roles-api') / 'monitor.sqlite3'}",
        run_reaper=False,
        tokens={"dashboard": {"token": DASHBOARD_TOKEN, "role": "admin"}},
    )
    with serve_in_thread(create_app(settings)) as url:
        yield Api(url, DASHBOARD_TOKEN)


@pytest.fixture(scope="module")
def dashboard(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    env = {"SESSION_MONITOR_ADMIN_TOKEN": DASHBOARD_TOKEN, "SESSION_MONITOR_DASHBOARD_USERS": json.dumps(USERS)}
    board = Dashboard(api.url, tmp_path_factory.mktemp("roles-dashboard") / "dashboard.log", env)
    try:
        yield board.wait_ready()
    finally:
        board.stop()


@pytest.fixture(scope="module")
def sessions(api: Api) -> dict[str, list[str]]:
    return {app: [api.register(app, user=f"user-{i}") for i in range(2)] for app in (APP_A, APP_B)}


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1500, "height": 900})
    try:
        yield context.new_page()
    finally:
        context.close()


def log_in(page: Page, url: str, user: str) -> None:
    page.goto(url)
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", USERS[user]["password"])
    page.click("button[type=submit], input[type=submit]")
    expect(sessions_table(page)).to_be_visible(timeout=20_000)


def test_a_viewer_sees_no_kill_controls(dashboard: Dashboard, sessions: dict[str, list[str]], page: Page) -> None:
    log_in(page, dashboard.url, "vera")
    expect(page.get_by_text("signed in as vera (viewer)")).to_be_visible()
    for sid in sessions[APP_A] + sessions[APP_B]:
        expect(row_of(page, sid)).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
    table = sessions_table(page)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(Path(SCREENSHOTS) / "dashboard-viewer.png"))
    expect(table.get_by_text("Kill", exact=True)).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Kill all"))).to_have_count(0)
    expect(page.get_by_text("Kill all sessions of app")).to_have_count(0)
    expect(page.get_by_text("History", exact=True)).to_be_visible()
    expect(page.get_by_text("Audit", exact=True)).to_have_count(0)  # the audit log is the admins'


def test_an_operator_of_app_a_sees_kill_on_its_rows_only(
    api: Api, dashboard: Dashboard, sessions: dict[str, list[str]], page: Page
) -> None:
    log_in(page, dashboard.url, "olga")
    expect(page.get_by_text(f"signed in as olga (operator of {APP_A})")).to_be_visible()
    for sid in sessions[APP_A]:
        expect(row_of(page, sid).get_by_text("Kill", exact=True)).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
    for sid in sessions[APP_B]:
        expect(row_of(page, sid)).to_have_count(1)
        expect(row_of(page, sid).get_by_text("Kill", exact=True)).to_have_count(0)
    # Kill all offers A only (its choices read "app (count)"; the App filter lists both apps).
    expect(page.locator("option", has_text=f"{APP_A} (2)")).to_have_count(1)
    expect(page.locator("option", has_text=f"{APP_B} (")).to_have_count(0)
    expect(page.locator("option", has_text=APP_B)).to_have_count(1)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(Path(SCREENSHOTS) / "dashboard-operator.png"))

    target = sessions[APP_A][0]
    row_of(page, target).get_by_text("Kill", exact=True).click()
    page.get_by_role("button", name="Kill this session").click()
    expect(page.get_by_text(f"Kill requested for session {target}").first).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
    entry = next(e for e in api.audit() if e["target"] == target)
    assert entry["action"] == "kill" and entry["actor"] == "olga via dashboard"
    assert not any(api.session(s)["kill_requested"] for s in sessions[APP_B])

    # The Notices tab: olga announces to her apps only, so she is asked to pick them (none is not "every app").
    page.get_by_text("Notices", exact=True).click()
    expect(page.get_by_text("Apps (pick at least one of yours)")).to_be_visible()
    picker = page.locator("select[multiple]")
    expect(picker.locator("option")).to_have_text([APP_A], timeout=UPDATE_TIMEOUT_MS)
    page.screenshot(path=str(Path(SCREENSHOTS) / "dashboard-operator-notices.png"))


def test_with_panels_oauth_the_login_goes_to_the_provider(api: Api, tmp_path: Path) -> None:
    """``--oauth-provider`` reaches Panel: the page sends the browser to the provider (never followed here)."""
    env = {
        "SESSION_MONITOR_ADMIN_TOKEN": DASHBOARD_TOKEN,
        "SESSION_MONITOR_DASHBOARD_OAUTH_PROVIDER": "github",
        "PANEL_OAUTH_KEY": "e2e-client-id",
        "PANEL_OAUTH_SECRET": "e2e-client-secret",
    }
    board = Dashboard(api.url, tmp_path / "oauth-dashboard.log", env)
    try:
        board.wait_ready()
        page = httpx.get(board.url, follow_redirects=False, timeout=10)
        assert page.status_code == 302 and urlsplit(page.headers["location"]).path in ("/login", "./login")
        login = httpx.get(f"{board.url}/login", follow_redirects=False, timeout=10)
        assert login.status_code == 302, login.text[:300]
        assert login.headers["location"].startswith("https://github.com/login/oauth/authorize?")
        assert "client_id=e2e-client-id" in login.headers["location"]
        assert "e2e-client-secret" not in login.headers["location"]
    finally:
        board.stop()
