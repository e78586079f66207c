"""``examples/settings_app.py`` under ``panel serve --num-procs 2``: a setting changed in one page shows in a page
served by the other process (shared config pushed through the monitor), as text, never as HTML."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from playwright.sync_api import Browser, Page
from tests.e2e.test_kill import save_screenshot
from tests.helpers import wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Monitor, PanelServer

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "settings_app.py"
PROPAGATION_BOUND_S = 10.0
"""Bound of the polls for a change to show in the other page (the target, 1 s, is the benchmark's to measure)."""
ROUNDS, PER_ROUND = 3, 4
"""Pages opened at once, and how many times, to get two served by different processes. The processes share the
listening socket and the first to accept wins: a page opened alone often lands on the same one (a CI run opened 8
in a row, one after another, all on one process); pages opened at once find the first one busy building a page."""


def served_by(page: Page) -> str:
    return str(page.get_by_text("served by process").first.inner_text()).rsplit(" ", 1)[-1]


def test_a_setting_changed_in_one_process_shows_in_the_other(
    monitor: Monitor, panel_server: Callable[..., PanelServer], browser: Browser, tmp_path: Path
) -> None:
    panel = panel_server(str(EXAMPLE), num_procs=2, env={"SESSION_MONITOR_CONFIG_CACHE_DIR": str(tmp_path / "c")})
    contexts = []
    pages: dict[str, Page] = {}
    try:
        for _ in range(ROUNDS):
            opened = []
            for _ in range(PER_ROUND):
                ctx = browser.new_context(viewport={"width": 900, "height": 520})
                ctx.set_default_timeout(30_000)
                contexts.append(ctx)
                page = ctx.new_page()
                # A navigation started from the page returns at once (goto waits for the answer).
                page.evaluate("url => { window.location.href = url }", f"{panel.url}/settings_app")
                opened.append(page)
            for page in opened:
                page.get_by_text("served by process").first.wait_for()
                pages.setdefault(served_by(page), page)
            if len(pages) == 2:
                break
        assert len(pages) == 2, f"{ROUNDS} x {PER_ROUND} pages, all served by one process: {list(pages)}"
        first, second = pages.values()

        title = "Q3 <b>numbers</b> & more"
        box = first.locator("input[type=text]").first
        box.fill(title)
        box.press("Enter")
        wait_until(
            lambda: second.locator("input[type=text]").first.input_value() == title, timeout_s=PROPAGATION_BOUND_S
        )
        # Shown as the text it is in the other page's preview (escaped), never as markup.
        wait_until(lambda: second.locator("#preview-title").inner_text() == title, timeout_s=PROPAGATION_BOUND_S)
        assert second.locator("#preview-title b").count() == 0

        second.get_by_role("button", name="dark").click()
        dark = first.get_by_role("button", name="dark")
        wait_until(lambda: "bk-active" in (dark.get_attribute("class") or ""), timeout_s=PROPAGATION_BOUND_S)

        stored = httpx.get(f"{monitor.url}/config/settings_app").json()["entries"]
        assert {e["key"]: e["value"] for e in stored} == {"title": title, "theme": "dark"}
        save_screenshot(second, "settings_app.png")
    finally:
        for ctx in contexts:
            ctx.close()
