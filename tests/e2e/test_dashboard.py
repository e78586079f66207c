"""The dashboard in headless Chromium against a real API server with sessions registered as real clients do."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from playwright.sync_api import Browser, FloatRect, Locator, Page, expect
from tests.e2e.dashboard_support import (
    ADMIN_TOKEN,
    PASSWORD,
    Api,
    Dashboard,
    Watched,
    running_api,
    show_tab,
    watch,
)
from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts"
UPDATE_TIMEOUT_MS = 5000
"""A change must show within 2 s (1 s refresh); 5 s leaves room for a loaded CI machine."""

XSS_PAYLOADS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(2)</script>",
    '"><svg onload=alert(3)>',
    "<iframe src=javascript:alert(4)></iframe>",
    "<b onmouseover=alert(5)>bold</b>",
    "<img src=x onerror=\"window.__pwned='img'\">",
    "javascript:alert(6)",
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """An API without tokens (as on a developer's machine), shared by the module's open-dashboard tests."""
    yield from running_api(tmp_path_factory.mktemp("api"), None)


@pytest.fixture(scope="module")
def dashboard(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    board = Dashboard(api.url, tmp_path_factory.mktemp("dashboard") / "dashboard.log")
    try:
        yield board.wait_ready()
    finally:
        board.stop()


@pytest.fixture(scope="module")
def secured_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from running_api(tmp_path_factory.mktemp("secured-api"), ADMIN_TOKEN)


@pytest.fixture(scope="module")
def secured_dashboard(secured_api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    env = {"SESSION_MONITOR_ADMIN_TOKEN": ADMIN_TOKEN, "SESSION_MONITOR_DASHBOARD_PASSWORD": PASSWORD}
    board = Dashboard(secured_api.url, tmp_path_factory.mktemp("secured") / "dashboard.log", env)
    try:
        yield board.wait_ready()
    finally:
        board.stop()


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    try:
        yield watch(context.new_page())
    finally:
        context.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def sessions_table(page: Page) -> Locator:
    return page.locator(".tabulator", has=page.get_by_text("Current task", exact=True)).first


def open_dashboard(page: Page, url: str, search: str | None = None) -> None:
    page.goto(url)
    expect(sessions_table(page)).to_be_visible(timeout=20_000)
    if search is not None:
        search_for(page, search)


def search_for(page: Page, text: str) -> None:
    box = page.get_by_placeholder("id, app, user, task, host")
    box.fill(text)


def box_of(locator: Locator) -> FloatRect:
    """The element's box. A running session's row redraws every second (its task's time moves), and a redraw can
    replace the cell between a visibility check and the read, which then finds no box: read again."""
    for _ in range(50):
        box = locator.bounding_box()
        if box is not None:
            return box
        locator.page.wait_for_timeout(100)
    raise AssertionError(f"{locator} has no box for 5 s")


def row_of(page: Page, text: str) -> Locator:
    return sessions_table(page).locator(".tabulator-row", has_text=text)


def test_rows_appear_and_update_in_place(api: Api, dashboard: Dashboard, watched: Watched) -> None:
    page = watched.page
    app = unique("live")
    first = api.register(app, user="ada", host="web-1")
    open_dashboard(page, dashboard.url, search=app)
    row = row_of(page, first)
    expect(row).to_contain_text("ada", timeout=UPDATE_TIMEOUT_MS)
    expect(row).to_contain_text("web-1:4242")
    expect(row).to_contain_text("idle")

    # Sort by user and select the row: both must survive the updates that follow.
    sessions_table(page).locator('.tabulator-col[tabulator-field="user"] .tabulator-col-title').click()
    row.locator('.tabulator-cell[tabulator-field="app"]').click()
    expect(row).to_have_class(re.compile("tabulator-selected"))

    api.set_status(first, "running", "crunching numbers")
    expect(row).to_contain_text("running", timeout=UPDATE_TIMEOUT_MS)
    expect(row).to_contain_text("crunching numbers")
    state = row.locator('.tabulator-cell[tabulator-field="state"] span')
    expect(state).to_have_css("color", "rgb(179, 89, 0)")  # amber

    second = api.register(app, user="bob")
    expect(row_of(page, second)).to_contain_text("bob", timeout=UPDATE_TIMEOUT_MS)
    user_header = sessions_table(page).locator('.tabulator-col[tabulator-field="user"]')
    expect(user_header).to_have_attribute("aria-sort", re.compile("ascending|descending"))
    expect(row_of(page, first)).to_have_class(re.compile("tabulator-selected"))
    texts = sessions_table(page).locator('.tabulator-row .tabulator-cell[tabulator-field="user"]').all_inner_texts()
    assert texts in (["ada", "bob"], ["bob", "ada"]) and len(texts) == 2

    with api.http() as c:
        c.delete(f"/sessions/{second}").raise_for_status()
    expect(row_of(page, second)).to_have_count(0, timeout=UPDATE_TIMEOUT_MS)
    expect(row_of(page, first)).to_have_class(re.compile("tabulator-selected"))
    assert watched.dialogs == []


def test_kill_on_a_row_kills_that_session(api: Api, dashboard: Dashboard, watched: Watched) -> None:
    page = watched.page
    app = unique("killrow")
    ids = [api.register(app, user=f"user{i}") for i in range(3)]
    target = ids[1]
    open_dashboard(page, dashboard.url, search=app)
    expect(sessions_table(page).locator(".tabulator-row")).to_have_count(3, timeout=UPDATE_TIMEOUT_MS)

    row_of(page, target).get_by_text("Kill", exact=True).click()
    confirm = page.get_by_role("button", name="Kill this session")
    expect(confirm).to_be_visible()
    question = page.get_by_text(f"Kill session {target}")
    expect(question).to_contain_text(app)
    expect(question).to_contain_text("user1")
    assert not api.session(target)["kill_requested"], "nothing may happen before the confirmation"
    confirm.click()

    expect(page.get_by_text(f"Kill requested for session {target}").first).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
    assert api.session(target)["kill_requested"] is True
    assert [api.session(s)["kill_requested"] for s in ids] == [False, True, False]
    expect(row_of(page, target)).to_contain_text("killing", timeout=UPDATE_TIMEOUT_MS)
    entry = next(e for e in api.audit() if e["target"] == target)
    assert entry["action"] == "kill" and entry["actor"] == "dashboard"


def test_cancel_kills_nothing_and_errors_are_shown(api: Api, dashboard: Dashboard, watched: Watched) -> None:
    page = watched.page
    app = unique("cancel")
    sid = api.register(app)
    open_dashboard(page, dashboard.url, search=app)
    row_of(page, sid).get_by_text("Kill", exact=True).click()
    page.get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("button", name="Kill this session")).to_be_hidden()
    assert api.session(sid)["kill_requested"] is False

    # The session ends between the confirmation and the click: the server's 404 is shown, not swallowed.
    row_of(page, sid).get_by_text("Kill", exact=True).click()
    with api.http() as c:
        c.delete(f"/sessions/{sid}").raise_for_status()
    page.get_by_role("button", name="Kill this session").click()
    error = page.get_by_text(re.compile(r"Failed: the server refused \(404\)")).first
    expect(error).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
    expect(error).to_contain_text("has already ended")


def test_kill_all_kills_only_that_apps_sessions(api: Api, dashboard: Dashboard, watched: Watched) -> None:
    page = watched.page
    doomed, spared = unique("doomed"), unique("spared")
    doomed_ids = [api.register(doomed) for _ in range(3)]
    spared_ids = [api.register(spared) for _ in range(2)]
    open_dashboard(page, dashboard.url)
    choice = page.locator("select", has=page.locator("option", has_text=f"{doomed} (3)"))
    expect(choice).to_have_count(1, timeout=UPDATE_TIMEOUT_MS)
    choice.select_option(label=f"{doomed} (3)")
    page.get_by_role("button", name="Kill all…").click()

    question = page.get_by_text(f"Kill all 3 live session(s) of app {doomed}?")
    expect(question).to_be_visible()
    page.get_by_role("button", name="Kill all 3 of this app").click()

    expect(page.get_by_text(f"Kill requested for 3 session(s) of app {doomed}").first).to_be_visible(
        timeout=UPDATE_TIMEOUT_MS
    )
    assert all(api.session(s)["kill_requested"] for s in doomed_ids)
    assert not any(api.session(s)["kill_requested"] for s in spared_ids)
    entry = next(e for e in api.audit() if e["target"] == doomed)
    assert entry["action"] == "kill_all" and entry["detail"]["killed_count"] == 3


def test_client_text_is_shown_as_text_and_never_runs(api: Api, dashboard: Dashboard, watched: Watched) -> None:
    page = watched.page
    tag = unique("xss")
    sessions = [
        {
            "session_id": f"{tag}-{i}",
            "app_name": f"{payload} {tag}",
            "user_id": payload,
            "status": "running",
            "current_task": payload,
            "task_started_at": None,
        }
        for i, payload in enumerate(XSS_PAYLOADS)
    ]
    api.sync(sessions, host=XSS_PAYLOADS[0], command=XSS_PAYLOADS[1])
    open_dashboard(page, dashboard.url, search=tag)
    table = sessions_table(page)
    expect(table.locator(".tabulator-row")).to_have_count(len(XSS_PAYLOADS), timeout=UPDATE_TIMEOUT_MS)
    for i, payload in enumerate(XSS_PAYLOADS):
        row = row_of(page, f"{tag}-{i}")
        for field in ("app", "user", "task"):
            cell = row.locator(f'.tabulator-cell[tabulator-field="{field}"]')
            expected = f"{payload} {tag}" if field == "app" else payload
            assert cell.inner_text().strip() == expected.strip(), (field, payload)
        assert row.locator('.tabulator-cell[tabulator-field="host"]').inner_text().startswith(XSS_PAYLOADS[0])

    # The confirmation, the outcome and the notification carry the app name too.
    row_of(page, f"{tag}-0").get_by_text("Kill", exact=True).click()
    expect(page.get_by_text(f"Kill session {tag}-0")).to_contain_text(XSS_PAYLOADS[0])
    page.get_by_role("button", name="Kill this session").click()
    expect(page.get_by_text(f"Kill requested for session {tag}-0").first).to_contain_text(
        XSS_PAYLOADS[0], timeout=UPDATE_TIMEOUT_MS
    )
    choice = page.locator("select", has=page.locator("option", has_text=f"{XSS_PAYLOADS[1]} {tag} (1)"))
    choice.select_option(label=f"{XSS_PAYLOADS[1]} {tag} (1)")
    page.get_by_role("button", name="Kill all…").click()
    expect(page.get_by_text("Kill all 1 live session(s) of app")).to_contain_text(XSS_PAYLOADS[1])
    page.get_by_role("button", name="Kill all 1 of this app").click()
    expect(page.get_by_text("Kill requested for 1 session(s) of app").first).to_contain_text(
        XSS_PAYLOADS[1], timeout=UPDATE_TIMEOUT_MS
    )
    # Each tab is built when first opened, and only the one shown is in the page: look for injected elements in
    # every tab while it is shown (the names are in the system status and in the Notices form's app list).
    shows = {"System status": page.get_by_text(XSS_PAYLOADS[0]), "Notices": page.locator("option", has_text=tag)}
    injected: list[str] = []
    for tab in ("System status", "Notices", "History", "Audit", "Policies", "Config", "Plots", "Sessions"):
        show_tab(page, tab)
        if tab in shows:
            expect(shows[tab].first).to_be_attached(timeout=UPDATE_TIMEOUT_MS)
        injected += page.evaluate(INJECTED_JS)
    expect(page.get_by_text(f"{XSS_PAYLOADS[0]}").first).to_be_attached()
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "dashboard-xss.png", full_page=True)

    assert watched.dialogs == []
    assert page.evaluate("() => window.__pwned === undefined")
    assert injected == []


INJECTED_JS = """() => {
        const found = [];
        const walk = (root) => {
          for (const el of root.querySelectorAll('*')) {
            if (el.shadowRoot) walk(el.shadowRoot);
            const tag = el.tagName.toLowerCase();
            const bad = (tag === 'img' && el.getAttribute('src') === 'x') || tag === 'iframe'
                || el.hasAttribute('onload') || el.hasAttribute('onmouseover') || el.hasAttribute('onerror');
            if (bad) found.push(el.outerHTML.slice(0, 80));
            if (tag === 'script' && (el.textContent || '').includes('alert(')) found.push(el.outerHTML.slice(0, 80));
          }
        };
        walk(document);
        return found;
    }"""
"""Elements a client's text would have made had it been rendered as HTML (tags, handlers, scripts)."""


def test_login_is_required_when_a_token_is_set(
    secured_api: Api, secured_dashboard: Dashboard, watched: Watched
) -> None:
    page = watched.page
    app = unique("secured")
    sid = secured_api.register(app)
    assert httpx.get(secured_dashboard.url, follow_redirects=False, timeout=10).status_code in (302, 303)

    page.goto(secured_dashboard.url)
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=username]", "grace")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit], input[type=submit]")
    expect(page).to_have_url(re.compile(r"/login\?error="))

    page.fill("input[name=username]", "grace")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    expect(sessions_table(page)).to_be_visible(timeout=20_000)
    expect(page.get_by_text("signed in as grace")).to_be_visible()
    search_for(page, app)
    row_of(page, sid).get_by_text("Kill", exact=True).click(timeout=UPDATE_TIMEOUT_MS)
    page.get_by_role("button", name="Kill this session").click()
    expect(page.get_by_text(f"Kill requested for session {sid}").first).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
    entry = next(e for e in secured_api.audit() if e["target"] == sid)
    assert entry["actor"] == "grace", "the logged-in operator is the actor in the audit log"

    # The token reached neither the page nor its websocket.
    wait_until(lambda: len(watched.frames) > 3)
    assert ADMIN_TOKEN not in page.content()
    assert not any(ADMIN_TOKEN in frame for frame in watched.frames)
    cookies = " ".join(f"{c['name']}={c['value']}" for c in page.context.cookies())
    assert ADMIN_TOKEN not in cookies
    assert watched.dialogs == []


def test_long_and_bidi_client_text_is_cut_shown_visibly_and_kill_stays_in_view(
    api: Api, dashboard: Dashboard, watched: Watched
) -> None:
    page = watched.page
    tag = unique("spoof")
    long_app = (f"{tag}-" + "very-long-application-name-" * 10)[:200]
    bidi_app = f"{tag} invoice\u202egnp.exe"  # reads "invoice" + "exe.png" reversed without the marker
    agent = Api(api.url, api.token)  # an agent of its own: the long host names only these two sessions
    agent.sync(
        [
            {"session_id": f"{tag}-long", "app_name": long_app, "user_id": "u" * 200, "status": "running",
             "current_task": "t" * 500},
            {"session_id": f"{tag}-bidi", "app_name": bidi_app, "user_id": "\u2067eve\u2069", "status": "idle"},
        ],
        host=f"{tag}-host-" + "h" * 150,
        command="panel serve " + "x" * 300,
    )  # fmt: skip
    open_dashboard(page, dashboard.url, search=tag)
    table = sessions_table(page)
    expect(table.locator(".tabulator-row")).to_have_count(2, timeout=UPDATE_TIMEOUT_MS)
    width = page.viewport_size["width"] if page.viewport_size else 0
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "dashboard-long-and-bidi-sessions.png")

    long_cell = row_of(page, f"{tag}-long").locator('.tabulator-cell[tabulator-field="app"]')
    assert long_cell.locator("span").get_attribute("title") == long_app, "the whole name on hover"
    expect(long_cell).to_be_visible()
    box = box_of(long_cell)
    assert box["width"] <= 330, box
    assert long_cell.evaluate("el => el.scrollWidth > el.clientWidth"), "a long name is cut, not the columns"
    assert long_cell.evaluate("el => getComputedStyle(el).textOverflow") == "ellipsis"
    for sid in (f"{tag}-long", f"{tag}-bidi"):
        kill = row_of(page, sid).get_by_text("Kill", exact=True)
        expect(kill).to_be_visible()
        kill_box = box_of(kill)
        assert kill_box["x"] + kill_box["width"] <= width, kill_box

    bidi_cell = row_of(page, f"{tag}-bidi").locator('.tabulator-cell[tabulator-field="app"]')
    assert bidi_cell.inner_text().strip() == f"{tag} invoice⟨U+202E⟩gnp.exe"
    assert "\u202e" not in bidi_cell.inner_text()
    user_cell = row_of(page, f"{tag}-bidi").locator('.tabulator-cell[tabulator-field="user"]')
    assert user_cell.inner_text().strip() == "⟨U+2067⟩eve⟨U+2069⟩"

    # Kill all of the bidi app: the API gets the real name back, and only that app's session is killed.
    label = f"{tag} invoice⟨U+202E⟩gnp.exe (1)"
    choice = page.locator("select", has=page.locator("option", has_text=label))
    choice.select_option(label=label)
    page.get_by_role("button", name="Kill all…").click()
    expect(page.get_by_text("Kill all 1 live session(s) of app")).to_contain_text("invoice⟨U+202E⟩gnp.exe")
    page.get_by_role("button", name="Kill all 1 of this app").click()
    expect(page.get_by_text("Kill requested for 1 session(s) of app").first).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
    assert api.session(f"{tag}-bidi")["kill_requested"] is True
    assert api.session(f"{tag}-long")["kill_requested"] is False
    assert next(e for e in api.audit() if e["action"] == "kill_all")["target"] == bidi_app

    page.get_by_text("System status", exact=True).first.click()
    agents = page.locator(".tabulator", has=page.get_by_text("Command", exact=True)).first
    agent_row = agents.locator(".tabulator-row", has_text=f"{tag}-host-")
    expect(agent_row).to_be_visible(timeout=10_000)
    apps_cell = agent_row.locator('.tabulator-cell[tabulator-field="Apps"]')
    assert long_app in (apps_cell.locator("span").get_attribute("title") or "")
    assert "invoice⟨U+202E⟩gnp.exe" in (apps_cell.locator("span").get_attribute("title") or "")
    for header in ("Host", "Status", "Apps", "Sessions", "Last seen"):
        column = agents.locator(".tabulator-col", has_text=header).first
        expect(column).to_be_visible()
        head_box = box_of(column)
        assert head_box["x"] + head_box["width"] <= width, (header, head_box)
    page.screenshot(path=SCREENSHOTS / "dashboard-long-and-bidi-system-status.png")


PAGE_GROWTH_CYCLES = 12
"""Updates between the two samples (the leak this guards against kept ~14 nodes a cycle)."""
PLOTS_REFRESH_TIMEOUT_MS = 20_000
"""The plots refresh every 15 s."""
LEGENDS_DRAWN_JS = """() => {
  const legends = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.classList.contains('bk-Legend')) legends.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return legends.length >= 2 && legends.every(l => l.shadowRoot && l.shadowRoot.querySelector('.bk-item'));
}"""
"""Both timelines' legends have their entries in the page."""
LEGENDS_NAME_JS = """(app) => {
  const found = [];
  const walk = (root) => {
    for (const el of root.querySelectorAll('*')) {
      if (el.classList.contains('bk-Legend') && el.shadowRoot) found.push(el.shadowRoot.textContent || '');
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(document);
  return found.length >= 2 && found.every((text) => text.includes(app));
}"""
"""Both timelines' legends name ``app``: a plots refresh after its sessions came has been drawn."""


def test_the_page_does_not_grow_while_it_updates(api: Api, dashboard: Dashboard, watched: Watched) -> None:
    """DOM nodes, listeners and Bokeh models stay put over ``PAGE_GROWTH_CYCLES`` updates of a paginated table.

    Before: each update of a paginated Tabulator kept ~10 detached nodes (its numbered page buttons), and every
    plots refresh added ~180 models to the page's Bokeh document.
    """
    page = watched.page
    app = unique("growth")
    for i in range(120):  # three pages of them
        api.register(app, user=f"u{i}")
    open_dashboard(page, dashboard.url, search=app)
    # The other tests' sessions fill three pages too: read the ids only once the search has narrowed the table
    # to this app, or they may be rows the search then hides.
    rows = sessions_table(page).locator(".tabulator-row")
    expect(rows).to_have_count(50, timeout=UPDATE_TIMEOUT_MS)
    expect(rows.filter(has_not_text=app)).to_have_count(0, timeout=UPDATE_TIMEOUT_MS)
    expect(page.get_by_text("page 1 of 3")).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
    shown = sessions_table(page).locator('.tabulator-cell[tabulator-field="session_id"]')
    ids = [t.strip() for t in shown.all_text_contents()[:10]]  # on the page shown
    assert len(ids) == 10
    cdp = page.context.new_cdp_session(page)
    cdp.send("Performance.enable")

    def sample() -> tuple[float, float, int]:
        """The smallest of five readings after a garbage collection: a redraw in flight is not growth."""
        readings = []
        for _ in range(5):
            cdp.send("HeapProfiler.collectGarbage")
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            models = page.evaluate("() => Bokeh.documents[0]._all_models.size")
            readings.append((metrics["Nodes"], metrics["JSEventListeners"], models))
            page.wait_for_timeout(500)
        return min(readings)

    def cycle(i: int) -> None:
        api.set_status(ids[i % 10], "running", f"step {i}")
        expect(row_of(page, ids[i % 10])).to_contain_text(f"step {i}", timeout=UPDATE_TIMEOUT_MS)

    # The plots, built when their tab is first opened: a refresh (every 15 s) sends new values, not new models, and
    # going to another tab and back reuses what was built. The legends come with the data: 4 nodes per app series
    # (up to 11 in each of the two timelines, ~120 nodes with the other tests' apps). Content, not growth: the first
    # sample waits until they name this test's app, a series the next refresh would otherwise add.
    show_tab(page, "Plots")
    page.wait_for_function(LEGENDS_NAME_JS, arg=app, timeout=PLOTS_REFRESH_TIMEOUT_MS)
    plots_before = sample()
    sampled = time.monotonic()

    show_tab(page, "Sessions")
    for i in range(3):  # warm up: the first updates create what every later one reuses
        cycle(i)
    nodes_before, listeners_before, models_before = sample()
    for i in range(3, 3 + PAGE_GROWTH_CYCLES):
        cycle(i)
    nodes_after, listeners_after, models_after = sample()
    assert models_after == models_before, "an update sent the page new Bokeh models instead of new values"
    assert nodes_after - nodes_before < 60, (nodes_before, nodes_after)  # was ~14 a cycle
    assert listeners_after - listeners_before < 20, (listeners_before, listeners_after)

    show_tab(page, "Plots")
    page.wait_for_function(LEGENDS_DRAWN_JS, timeout=PLOTS_REFRESH_TIMEOUT_MS)
    page.wait_for_timeout(max(0.0, 16.0 - (time.monotonic() - sampled)) * 1000)  # one plots refresh at least
    (nodes_before, listeners_before, models_before), (nodes_after, listeners_after, models_after) = (
        plots_before,
        sample(),
    )
    assert models_after == models_before, "a plots refresh or a tab switch sent the page new Bokeh models"
    assert nodes_after - nodes_before < 60, (nodes_before, nodes_after)
    assert listeners_after - listeners_before < 20, (listeners_before, listeners_after)


def log_in(page: Page, url: str, name: str) -> None:
    page.goto(url)
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    expect(sessions_table(page)).to_be_visible(timeout=20_000)


@pytest.mark.parametrize("name", ["José", "张伟", "مريم الحسيني"])
def test_an_operator_with_any_name_can_kill_and_is_named_in_the_audit_log(
    name: str, secured_api: Api, secured_dashboard: Dashboard, watched: Watched
) -> None:
    page = watched.page
    app = unique("unicode-actor")
    sid = secured_api.register(app)
    log_in(page, secured_dashboard.url, name)
    expect(page.get_by_text(f"signed in as {name}")).to_be_visible()
    search_for(page, app)
    row_of(page, sid).get_by_text("Kill", exact=True).click(timeout=UPDATE_TIMEOUT_MS)
    page.get_by_role("button", name="Kill this session").click()
    expect(page.get_by_text(f"Kill requested for session {sid}").first).to_be_visible(timeout=UPDATE_TIMEOUT_MS)
    entry = next(e for e in secured_api.audit() if e["target"] == sid)
    assert entry["actor"] == name and entry["action"] == "kill"
    page.get_by_text("Audit", exact=True).first.click()
    audit = page.locator(".tabulator", has=page.get_by_text("Who", exact=True)).first
    expect(audit.locator(".tabulator-row", has_text=sid).first).to_contain_text(name, timeout=10_000)


def test_an_action_that_fails_because_the_api_is_down_says_so_in_the_page(tmp_path: Path, watched: Watched) -> None:
    page = watched.page
    api_run = running_api(tmp_path, None)
    api = next(api_run)
    board = Dashboard(api.url, tmp_path / "dashboard.log").wait_ready()
    try:
        app = unique("api-down")
        sid = api.register(app)
        open_dashboard(page, board.url, search=app)
        row_of(page, sid).get_by_text("Kill", exact=True).click(timeout=UPDATE_TIMEOUT_MS)
        api_run.close()  # the API stops between the question and the confirmation
        page.get_by_role("button", name="Kill this session").click()
        outcome = page.get_by_text(re.compile(r"Failed: cannot reach the monitor server")).first
        expect(outcome).to_be_visible(timeout=20_000)
        toast = page.locator(".notyf__toast--error", has_text="cannot reach the monitor server")
        expect(toast.first).to_be_visible()
        SCREENSHOTS.mkdir(exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "dashboard-action-failed.png")
    finally:
        board.stop()
        api_run.close()


def test_serve_runs_the_dashboard_beside_the_api_and_stops_it(tmp_path: Path) -> None:
    api_port, dashboard_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_MONITOR_")}
    env["SESSION_MONITOR_DATABASE_URL"] = f"sqlite:///{tmp_path / 'monitor.sqlite3'}"
    command = [sys.executable, "-m", "session_monitor", "serve", "--port", str(api_port)]
    command += ["--dashboard-port", str(dashboard_port)]
    with open(tmp_path / "serve.log", "wb") as log:
        serve = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:

        def dashboard_up() -> bool:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()
            try:  # the first page builds every tab: seconds of CPU, and more on a loaded machine
                return httpx.get(f"http://127.0.0.1:{dashboard_port}/", timeout=30).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(dashboard_up, timeout_s=120, interval_s=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log:\n{(tmp_path / 'serve.log').read_text()}") from None
        children = psutil.Process(serve.pid).children()
        assert len(children) == 1 and "dashboard" in children[0].cmdline()
        assert f"http://127.0.0.1:{api_port}" in children[0].cmdline()
    finally:
        os.kill(serve.pid, signal.SIGTERM)
        serve.wait(timeout=20)
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], "serve must stop the dashboard it started"


PROBES = [
    "/",
    "/ws",
    "/autoload.js?bokeh-autoload-element=probe",
    "/autoload.js",
    "/metadata",
    "/static/js/bokeh.min.js",
]
"""What an unauthenticated scanner asks for: the page, its websocket, the embedding script and a static file."""


@pytest.mark.parametrize("secured", [False, True], ids=["open", "login"])
def test_unauthenticated_probes_get_an_answer_and_log_no_traceback(
    secured: bool, request: pytest.FixtureRequest
) -> None:
    board: Dashboard = request.getfixturevalue("secured_dashboard" if secured else "dashboard")
    before = len(board.log_path.read_text(errors="replace"))
    for path in PROBES:
        response = httpx.get(f"{board.url}{path}", follow_redirects=False, timeout=10)
        assert response.status_code < 500, (path, response.status_code)
        if secured and not path.startswith("/static/"):
            assert response.status_code in (302, 403), (path, response.status_code)
            if response.status_code == 302:
                assert "/login" in response.headers["location"]
    with httpx.Client(timeout=10) as c:  # a websocket handshake without a login
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
        assert c.get(f"{board.url}/ws", headers=upgrade).status_code in ((403,) if secured else (400,))

    def logged() -> str:
        return board.log_path.read_text(errors="replace")[before:]

    wait_until(lambda: "/ws" in logged(), timeout_s=10)  # Tornado logs each answer as it is sent
    assert "Traceback" not in logged() and "Uncaught exception" not in logged(), logged()
