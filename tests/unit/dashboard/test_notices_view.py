"""The Notices tab and the kill dialogs' timing, driven against the real app (SQLite and PostgreSQL) over ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest

from session_monitor.dashboard.client import ApiClient
from session_monitor.dashboard.notices_view import KillTiming, NoticesView, preview_html
from session_monitor.server import Settings
from tests.helpers import serving

# The dashboard uses ``name=`` and ``button_type=`` (Panel 1.8, the lowest supported, has no ``label=``, ``color=``).
pytestmark = [
    pytest.mark.filterwarnings("ignore:Widget.name is deprecated:PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:button_type is deprecated:PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index"),  # Panel's Tabulator, pandas 3.1
]

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    """The app on the real clock: the view sets ``until`` from this machine's time."""
    async with serving(settings) as (app, client):
        yield app, client


@pytest.fixture
def client(served: tuple[object, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


@pytest.fixture
async def api(served: tuple[object, httpx.AsyncClient]) -> AsyncIterator[ApiClient]:
    client = ApiClient("http://127.0.0.1", transport=httpx.ASGITransport(app=served[0]))  # type: ignore[arg-type]
    yield client
    await client.aclose()


def test_the_preview_is_the_banner_with_its_text_escaped() -> None:
    html = preview_html(f"Maintenance {XSS}", "error")
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html and "#fde8e8" in html
    assert "(the message)" in preview_html("  ", "info")


async def test_post_list_and_remove_an_announcement(client: httpx.AsyncClient, api: ApiClient) -> None:
    await client.post("/sessions", json={"app_name": "sales"})
    view = NoticesView(api, actor="ops", apps=lambda: ["sales"])
    await view.refresh()
    assert view.target_apps.options == ["sales"] and view.announcements.value.empty
    view.message.value_input = f"Back at 18:00 {XSS}"
    view.target_apps.value = ["sales"]
    view.until.value = 30
    await view._post(None)
    assert "Announcement 1 posted to app sales." in view.outcome.object and view.message.value_input == ""
    rows = view.announcements.value
    assert list(rows["Message"]) == [f"Back at 18:00 {XSS}"] and list(rows["Targets"]) == ["app sales"]
    assert rows["Until (UTC)"].iat[0] != "" and list(rows["By"]) == ["ops"]

    await view._act(lambda: api.remove_announcement(1, actor="ops"), "removed")()
    assert view.announcements.value.empty and "removed" in view.outcome.object
    await view._act(lambda: api.remove_announcement(1, actor="ops"), "removed")()
    assert "Failed" in view.outcome.object and "no active announcement 1" in view.outcome.object


async def test_an_empty_announcement_is_not_sent(client: httpx.AsyncClient, api: ApiClient) -> None:
    view = NoticesView(api, actor="ops", apps=list)
    view.message.value_input = "   "
    await view._post(None)
    assert "Write the announcement first." in view.outcome.object
    assert (await client.get("/announcements")).json()["announcements"] == []


async def test_an_operator_limited_to_apps_must_pick_its_apps(client: httpx.AsyncClient, api: ApiClient) -> None:
    """No app picked means every app, which such an operator may not announce to: the form says so and sends nothing."""
    view = NoticesView(api, actor="ops", apps=lambda: ["sales"], limited=True)
    assert view.target_apps.name == "Apps (pick at least one of yours)"
    view.message.value_input = "Back at 18:00"
    await view._post(None)
    assert "you may announce to your apps only" in view.outcome.object
    assert (await client.get("/announcements")).json()["announcements"] == []
    assert NoticesView(api, actor="ops", apps=list).target_apps.name == "Apps (none: every app)"


async def test_a_kill_in_n_minutes_is_listed_with_cancel(client: httpx.AsyncClient, api: ApiClient) -> None:
    sid = (await client.post("/sessions", json={"app_name": "sales"})).json()["session_id"]
    timing = KillTiming()
    assert timing.delay_s is None
    timing.when.value, timing.minutes.value, timing.reason.value = "In N minutes", 5, "deploy"
    data = await api.kill(sid, actor="ops", reason=timing.reason.value, delay_s=timing.delay_s)
    assert "Kill scheduled for it at <b>" in timing.done(data, "it") and "pending kill 1" in timing.done(data, "it")
    view = NoticesView(api, actor="ops", apps=list)
    await view.refresh()
    kills = view.kills.value
    assert list(kills["Target"]) == [sid] and list(kills["Reason"]) == ["deploy"]
    minutes, seconds = map(int, kills["Left"].iat[0].split(":"))
    assert 4 * 60 + 30 <= minutes * 60 + seconds <= 5 * 60, kills["Left"].iat[0]  # seconds pass on a loaded machine
    view._cancel(SimpleNamespace(row=0))  # queued on Panel's loop: run the same action here
    await view._act(lambda: api.cancel_kill(1, actor="ops"), "cancelled")()
    assert view.kills.value.empty and not (await client.get(f"/sessions/{sid}")).json()["kill_requested"]
    timing.reset()
    assert timing.delay_s is None and timing.reason.value == ""
    now = await api.kill(sid, actor="ops", delay_s=timing.delay_s)
    assert timing.done(now, "it") == "Kill requested for it."
