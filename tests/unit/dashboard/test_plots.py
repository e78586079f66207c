"""The plots tab updates its figures in place: a refresh with new numbers adds no model to the page's document.

A figure rebuilt on every refresh leaves its old models in the browser's Bokeh document (BokehJS keeps every
model it was sent), so an open page grew by ~180 models and ~2,000 DOM nodes a minute. The API is the real app
(SQLite and PostgreSQL); the document is a real Bokeh document.
"""

from __future__ import annotations

import httpx
from bokeh.document import Document
from bokeh.models import ColumnDataSource, FactorRange

from session_monitor.dashboard.client import ApiClient
from session_monitor.dashboard.plots import PlotsView
from tests.conftest import FakeClock

REFRESHES = 4


async def test_refreshes_with_new_numbers_add_no_model(
    app: object, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    api = ApiClient("http://127.0.0.1", transport=httpx.ASGITransport(app=app))  # type: ignore[arg-type]
    plots = PlotsView(api)
    doc = Document()
    doc.add_root(plots.panel().get_root(doc))
    try:
        await plots.refresh([])
        before = {m.id for m in doc.models}
        sources_before = {m.id: dict(m.data) for m in doc.models if isinstance(m, ColumnDataSource)}
        for i in range(REFRESHES):
            for app_name in ("reports", f"app-{i}"):  # a new app every time: a new line in the timelines
                (await client.post("/sessions", json={"app_name": app_name})).raise_for_status()
            clock.advance(minutes=2)
            await plots.refresh([{"task_seconds": 5.0 * 10**i}])
        after = {m.id for m in doc.models}
    finally:
        await api.aclose()
    assert after - before == set(), f"{len(after - before)} models added by {REFRESHES} refreshes"
    changed = [m for m in doc.models if isinstance(m, ColumnDataSource) and dict(m.data) != sources_before.get(m.id)]
    assert len(changed) >= 3, "the timelines and the task histogram show the new numbers"
    apps = {a for m in doc.models if isinstance(m, ColumnDataSource) for a in m.data.get("app", [])}
    assert {"reports", "app-0", "app-3"} <= apps
    assert any(isinstance(m, FactorRange) and "< 10 s" in m.factors for m in doc.models)
