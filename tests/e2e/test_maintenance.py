"""Notices in real Panel pages (headless Chromium): banners, announcements, kills with notice.

One monitor and one ``panel serve`` (every app tracked through ``--setup``) for the module; each test opens its
own pages. The banner is the one piece announcements, kill countdowns and draining show themselves with.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect
from tests.e2e.conftest import PanelServer
from tests.helpers import wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Monitor

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
"""Screenshots of the last run (gitignored)."""
SETUP = str(ROOT / "src" / "session_monitor" / "client" / "setup_hook.py")

MESSAGE_COUNTER = """
(() => {
  window.__smMessages = 0;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) { super(...args); this.addEventListener("message", () => { window.__smMessages += 1; }); }
  };
})();
"""
"""Init script: counts the websocket messages the page receives (``window.__smMessages``)."""


@pytest.fixture(scope="module")
def maintenance_panel(monitor: Monitor, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelServer]:
    folder = tmp_path_factory.mktemp("maintenance")
    ARTIFACTS.mkdir(exist_ok=True)
    monitor.wait_ready()  # one start at a time: both at once on a busy machine took longer than either's timeout
    server = PanelServer(("banners.py", "plain.py", "template.py"), monitor.url, folder, folder / "panel.log",
                         args=("--setup", SETUP))  # fmt: skip
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def banners(page: Page) -> Locator:
    """The banners of the page (in the banner component's own shadow root; Playwright's CSS pierces it)."""
    return page.locator(".sm-banners .banner")


def layout(page: Page) -> list[Any]:
    """Where the page's own elements are (headings, inputs, buttons): a banner must move none of them."""
    return page.evaluate(  # type: ignore[no-any-return]
        """() => {
            const out = [];
            const walk = (root) => root.querySelectorAll("*").forEach((e) => {
                if (e.matches(".sm-banners")) { return }
                if (e.shadowRoot) { walk(e.shadowRoot) }
                if (e.matches("h1, input, select, button, pre")) {
                    const r = e.getBoundingClientRect();
                    out.push([e.tagName, Math.round(r.x), Math.round(r.y), Math.round(r.width), Math.round(r.height)]);
                }
            });
            walk(document);
            return out;
        }"""
    )


@pytest.mark.parametrize("query", ["", "?template=1"], ids=["plain", "fast-list-template"])
def test_banner_api_shows_escaped_text_and_a_ticking_countdown_without_moving_the_layout(
    maintenance_panel: PanelServer, context: BrowserContext, query: str
) -> None:
    context.add_init_script(MESSAGE_COUNTER)
    page = context.new_page()
    page.goto(maintenance_panel.app_url("banners") + query)
    page.get_by_text("session ").first.wait_for()
    page.wait_for_timeout(300)  # the page's first layout pass
    before = layout(page)

    page.get_by_role("button", name="Announce").click()
    announcement = banners(page).filter(has_text="Maintenance at")
    # Text, never HTML: the tags show as typed, and no <b> element was made.
    expect(announcement).to_have_text("Maintenance at <b>18:00</b> & after×")
    assert page.locator(".sm-banners b").count() == 0
    page.get_by_role("button", name="Countdown").click()
    countdown = banners(page).filter(has_text="This session ends in")
    expect(countdown).to_have_text(_countdown_pattern())
    expect(banners(page).first).to_contain_text("This session ends in")  # countdowns first
    assert layout(page) == before

    # The countdown ticks in the browser alone: no websocket message while it counts down two seconds.
    page.wait_for_timeout(1000)  # the answers to the click (Bokeh acknowledges each change the page sends)
    first = countdown.inner_text()
    received = page.evaluate("window.__smMessages")
    page.wait_for_function(
        "(first) => { const b = [...document.querySelector('.sm-banners').shadowRoot.querySelectorAll('.banner')]"
        ".find((e) => e.textContent.startsWith('This session ends in'));"
        " return b != null && b.textContent !== first && b.textContent.includes(':') }",
        arg=first,
    )
    seconds = _left_s(first)
    page.wait_for_function(
        "(s) => { const t = document.querySelector('.sm-banners').shadowRoot.querySelector('.banner').textContent;"
        " const m = t.match(/in (\\d+):(\\d\\d)/); return m != null && (+m[1]) * 60 + (+m[2]) <= s - 2 }",
        arg=seconds,
    )
    assert page.evaluate("window.__smMessages") == received

    # The user hides an announcement; countdowns have no close button.
    assert countdown.get_by_role("button").count() == 0
    announcement.get_by_role("button", name="Hide this notice").click()
    expect(announcement).to_have_count(0)
    page.get_by_role("button", name="Clear").click()
    expect(banners(page)).to_have_count(0)
    assert layout(page) == before


def _countdown_pattern() -> Any:
    return re.compile(r"^This session ends in 1:(2\d|30): maintenance$")


def _left_s(text: str) -> int:
    minutes, seconds = text.split(" in ", 1)[1].split(":", 2)[:2]
    return int(minutes) * 60 + int(seconds)


def wait_live(monitor: Monitor, app: str, known: set[str]) -> str:
    """The id of the one new live session of ``app`` (not in ``known``), once the monitor lists it."""
    new = wait_until(lambda: {s["session_id"] for s in monitor.sessions(app=app)} - known, timeout_s=20)
    assert len(new) == 1, new
    return str(next(iter(new)))


def open_page(context: BrowserContext, panel: PanelServer, monitor: Monitor, app: str) -> tuple[Page, str]:
    known = {s["session_id"] for s in monitor.sessions(app=app)}
    page = context.new_page()
    page.goto(panel.app_url(app))
    page.get_by_text("session ").first.wait_for()
    return page, wait_live(monitor, app, known)


def cli(monitor: Monitor, *args: str) -> str:
    """``session-monitor ARGS --url <monitor>``: its output (it must succeed)."""
    done = subprocess.run([sys.executable, "-m", "session_monitor", *args, "--url", monitor.url],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_an_announcement_shows_in_plain_and_template_pages_and_in_pages_opened_later_until_removed(
    monitor: Monitor, maintenance_panel: PanelServer, context: BrowserContext
) -> None:
    plain, _ = open_page(context, maintenance_panel, monitor, "plain")
    template, _ = open_page(context, maintenance_panel, monitor, "template")
    template.wait_for_timeout(300)
    before = layout(template)
    text = "Maintenance at 18:00 <i>save your work</i>"
    out = cli(monitor, "announce", text, "--level", "warning", "--until", "+10m")
    announcement_id = out.split()[1]
    for page in (plain, template):
        expect(banners(page)).to_have_text([text + "×"])
    assert "warning" in (banners(template).first.get_attribute("class") or "")
    assert layout(template) == before
    later, _ = open_page(context, maintenance_panel, monitor, "plain")
    expect(banners(later)).to_have_text([text + "×"])
    template.screenshot(path=str(ARTIFACTS / "announcement-template.png"))

    cli(monitor, "announce", "--remove", announcement_id)
    for page in (plain, template, later):
        expect(banners(page)).to_have_count(0)
    assert layout(template) == before


def test_a_kill_with_notice_counts_down_is_cancelled_or_runs_at_its_deadline(
    monitor: Monitor, maintenance_panel: PanelServer, context: BrowserContext
) -> None:
    kept, kept_id = open_page(context, maintenance_panel, monitor, "plain")
    doomed, doomed_id = open_page(context, maintenance_panel, monitor, "template")
    start = time.monotonic()
    cancel = cli(monitor, "kill", kept_id, "--in", "30s", "--reason", "deploy").split("pending kill ")[1].split(":")[0]
    cli(monitor, "kill", doomed_id, "--in", "30s", "--reason", "deploy")
    deadline = datetime.fromisoformat(monitor.http.get("/pending-kills").json()["pending_kills"][1]["deadline"])
    countdown = re.compile(r"^This session ends in 0:([0-2]\d|30): deploy$")
    for page in (kept, doomed):
        expect(banners(page)).to_have_text([countdown])
    doomed.screenshot(path=str(ARTIFACTS / "kill-countdown-template.png"))

    kept.wait_for_timeout(max(0.0, 10.0 - (time.monotonic() - start)) * 1000)
    assert cli(monitor, "cancel-kill", cancel).strip() == f"pending kill {cancel} cancelled"
    expect(banners(kept)).to_have_count(0)
    expect(banners(doomed)).to_have_text([countdown])

    # The other runs at its deadline as a normal kill: the notice with its reason, the session ended as killed.
    expect(doomed.locator(".notyf__toast", has_text="deploy")).to_be_visible(timeout=45_000)
    ended = wait_until(lambda: monitor.session(doomed_id)["ended_at"], timeout_s=20)
    assert monitor.session(doomed_id)["end_reason"] == "killed"
    assert datetime.fromisoformat(ended) >= deadline
    expect(banners(doomed)).to_have_count(0)
    session = monitor.session(kept_id)
    assert session["ended_at"] is None and not session["kill_requested"]
    assert kept.locator(".notyf__toast").count() == 0
