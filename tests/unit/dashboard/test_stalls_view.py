"""The Stalls tab and the loop columns: display text from client text, and the stack escaped in its ``<pre>``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from session_monitor.dashboard.client import ApiClient
from session_monitor.dashboard.stalls_view import (
    AGENT_LOOP_COLUMNS,
    STALL_COLUMNS,
    StallsView,
    agent_loop_row,
    stack_html,
    stack_text,
    stall_row,
    where,
)
from session_monitor.server import Settings
from tests.conftest import FakeClock
from tests.helpers import serving
from tests.integration.test_stalls import AGENT, stall, sync_body

XSS = "<img src=x onerror=alert(1)>"
STACK: list[Mapping[str, Any]] = [
    {"file": "/srv/site-packages/tornado/ioloop.py", "line": 9, "function": "run", "code": None, "app": False},
    {"file": f"/srv/app/{XSS}.py", "line": 17, "function": f"block_{XSS}", "code": f"x = '{XSS}'", "app": True},
]


def test_where_names_the_first_app_frame() -> None:
    assert where(STACK) == f"block_{XSS} ({XSS}.py:17)"
    assert where([STACK[0]]) == "run (ioloop.py:9)"
    assert where([]) == ""


def test_stall_row_and_stack_text() -> None:
    row = stall_row({"id": 7, "started_at": "2026-01-01T12:00:00+00:00", "host": "web", "pid": 42,
                     "app_name": "sales", "session_id": "s1", "duration_s": 0.71, "final": False,
                     "function": "f", "stack": STACK})  # fmt: skip
    assert dict(zip(STALL_COLUMNS, row, strict=True))["Duration"] == "0.71 s (still blocked)"
    assert row[1] == "web:42" and row[-1] == 7
    text = stack_text(STACK)
    assert f"app  /srv/app/{XSS}.py:17  in block_{XSS}" in text and f"x = '{XSS}'" in text
    assert stack_text([]).startswith("(no stack")


def test_expanded_stack_is_escaped() -> None:
    html = stack_html(stack_text(STACK))
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html and html.startswith("<pre")


def test_agent_row_gains_the_loop_columns() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    agent = {"host": "web", "pid": 1, "last_seen": now.isoformat(), "started_at": now.isoformat(),
             "loop": {"lag_p99_ms": 3.25, "lag_max_ms": 2100.0, "busy": 0.4, "pool_size": 4, "pool_queue": 2,
                      "pool_busy": 4}}  # fmt: skip
    shown = dict(zip(AGENT_LOOP_COLUMNS, agent_loop_row(agent, now), strict=True))
    assert (shown["Lag p99"], shown["Lag max"], shown["Busy"], shown["Pool queue"]) == (
        "3.2 ms", "2.10 s", "40 %", "2 (4/4 busy)",
    )  # fmt: skip
    empty = dict(zip(AGENT_LOOP_COLUMNS, agent_loop_row({**agent, "loop": None}, now), strict=True))
    assert empty["Lag p99"] == "" and empty["Host"] == "web"


@pytest.mark.filterwarnings("ignore:The inplace keyword in DataFrame.reset_index")  # Panel's Tabulator, pandas 3.1
async def test_an_opened_stack_stays_open_when_a_new_stall_arrives(settings: Settings, clock: FakeClock) -> None:
    """Panel's Tabulator closes every expanded row when its rows change; the view opens the same stalls again."""
    async with serving(settings, clock) as (app, client):

        async def report(seq: int) -> None:
            body = sync_body(clock, stalls=[stall(clock, seq)])
            (await client.post(f"/agents/{AGENT}/sync", json=body)).raise_for_status()
            clock.advance(seconds=10)

        api = ApiClient("http://127.0.0.1", transport=httpx.ASGITransport(app=app))
        try:
            view = StallsView(api)
            for seq in (1, 2):
                await report(seq)
            await view.refresh()
            assert len(view.table.value) == 2
            opened = int(view.table.value.iloc[1]["id"])  # the older one
            view.table.expanded = [1]
            await report(3)
            await view.refresh()
            shown = view.table.value
            assert len(shown) == 3
            assert [int(shown.iloc[i]["id"]) for i in view.table.expanded] == [opened]
        finally:
            await api.aclose()
