"""The dashboard's sessions tab for each role against a real server app: which rows offer Kill, and what happens
when a click comes anyway (a forged websocket event: the browser has no control to click). The server refuses it
(403), because the dashboard's token is narrowed to the signed-in user's role on every action."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from session_monitor.dashboard import model
from session_monitor.dashboard.client import ApiClient, SessionFeed
from session_monitor.dashboard.roles import ADMIN, DashboardRole
from session_monitor.dashboard.sessions_view import SessionsView
from session_monitor.errors import AuthError
from tests.conftest import DatabaseTarget
from tests.helpers import serving

TOKEN = "dashboard-token-for-roles-1"
# The view's widgets use Panel's current keywords (name, button_type), which newer Panel marks for its 2.0.
pytestmark = [
    pytest.mark.filterwarnings("ignore::PendingDeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning"),  # Panel's Tabulator, pandas 3.1
]


@dataclass
class Click:
    row: int
    column: str = "kill"


@pytest.fixture
async def served(db_target: DatabaseTarget) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    settings = db_target.settings(tokens={"dashboard": {"token": TOKEN, "role": "admin"}})
    async with serving(settings) as (app, client):
        client.headers["Authorization"] = f"Bearer {TOKEN}"
        for app_name in ("sales", "sales", "hr"):
            assert (await client.post("/sessions", json={"app_name": app_name})).status_code == 200
        yield app, client


async def view_for(app: object, role: DashboardRole, actor: str) -> tuple[SessionsView, ApiClient]:
    api = ApiClient("http://127.0.0.1", TOKEN, transport=httpx.ASGITransport(app=app))  # type: ignore[arg-type]
    view = SessionsView(api, SessionFeed(api, max_age_s=0.0), actor=actor, role=role)
    await view.refresh()
    assert len(view.table.value) == 3
    return view, api


async def click_and_confirm(view: SessionsView, app_name: str) -> str:
    row = int(view.table.value.index[view.table.value["app"] == app_name][0])
    view._on_click(Click(row))
    await view._confirmed(None)
    return str(view.outcome.object)


@pytest.mark.parametrize(
    ("role", "kill_on"),
    [(DashboardRole("viewer"), set()), (DashboardRole("operator", frozenset({"sales"})), {"sales"}), (ADMIN, None)],
)
async def test_kill_cells_follow_the_role(served, role: DashboardRole, kill_on: set[str] | None) -> None:
    app, _ = served
    view, api = await view_for(app, role, "someone")
    try:
        frame = view.table.value
        offered = set(frame.loc[frame["kill"] == model.KILL, "app"])
        assert offered == ({"sales", "hr"} if kill_on is None else kill_on)
        assert ("kill" in view.table.hidden_columns) is (not role.can_kill)
        assert set(view.kill_app.options.values()) == ({"sales", "hr"} if kill_on is None else kill_on)
    finally:
        await api.aclose()


async def test_a_forged_kill_of_a_viewer_is_refused_by_the_server(served) -> None:
    app, client = served
    view, api = await view_for(app, DashboardRole("viewer"), "vera")
    try:
        outcome = await click_and_confirm(view, "sales")
        assert "Failed" in outcome and "(403)" in outcome and "operator role" in outcome
        with pytest.raises(AuthError, match="403"):
            await api.kill_all("hr", actor="vera", role=DashboardRole("viewer"))
    finally:
        await api.aclose()
    listed = (await client.get("/sessions")).json()["sessions"]
    assert not any(s["kill_requested"] for s in listed)
    assert (await client.get("/audit")).json()["entries"] == []


async def test_an_operator_kills_its_apps_and_is_refused_others(served) -> None:
    app, client = served
    view, api = await view_for(app, DashboardRole("operator", frozenset({"sales"})), "olga")
    try:
        assert "Kill requested" in await click_and_confirm(view, "sales")
        # A click on an hr row's empty cell does nothing; a forged call to the API is refused.
        row = int(view.table.value.index[view.table.value["app"] == "hr"][0])
        view._on_click(Click(row))
        assert view._pending is None
        with pytest.raises(AuthError, match="403"):
            await api.kill_all("hr", actor="olga", role=view.role)
    finally:
        await api.aclose()
    entries = (await client.get("/audit")).json()["entries"]
    assert [(e["actor"], e["action"]) for e in entries] == [("olga via dashboard", "kill")]
