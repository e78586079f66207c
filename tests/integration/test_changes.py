"""``GET /sessions?changed_since=``: only what changed, on SQLite and the real PostgreSQL.

The clock is a ``FakeClock``: a cursor is 2 s (the overlap) before the read, so each test moves
time past the overlap before it expects an empty answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from session_monitor.server import Settings
from session_monitor.store.changes import CURSOR_OVERLAP
from tests.conftest import FakeClock
from tests.integration.test_agent_protocol import AGENT, ended, sync, tracked

PAST_OVERLAP = CURSOR_OVERLAP + timedelta(seconds=1)


async def changes(client: httpx.AsyncClient, cursor: str, **params: Any) -> dict[str, Any]:
    response = await client.get("/sessions", params={"changed_since": cursor, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def full(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/sessions")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(body: dict[str, Any]) -> dict[str, str]:
    return {s["session_id"]: s["state"] for s in body["sessions"]}


async def test_full_listing_hands_out_a_cursor_before_the_read(client: httpx.AsyncClient, clock: FakeClock) -> None:
    body = await full(client)
    assert datetime.fromisoformat(body["cursor"]) == clock.now - CURSOR_OVERLAP
    assert "agent_last_seen" not in body or body["agent_last_seen"] is None


async def test_agent_heartbeats_are_not_changes_but_state_changes_are(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    t0 = clock.now
    await sync(client, clock, sessions_=[tracked("a-1", t0), tracked("a-2", t0), tracked("b-1", t0, app_name="b")])
    cursor = (await full(client))["cursor"]
    body = await changes(client, cursor)
    assert set(ids(body)) == {"a-1", "a-2", "b-1"}  # inside the overlap: seen again, merged by id
    assert body["total"] == 3
    assert datetime.fromisoformat(body["agent_last_seen"][AGENT]) == t0

    clock.advance(seconds=PAST_OVERLAP.total_seconds())
    cursor = (await changes(client, body["cursor"]))["cursor"]
    await sync(client, clock)  # heartbeat only: all three sessions are alive, none changed
    body = await changes(client, cursor)
    assert body["sessions"] == [] and body["total"] == 3
    assert datetime.fromisoformat(body["agent_last_seen"][AGENT]) == clock.now

    clock.advance(seconds=1)
    running = tracked("a-1", t0, status="running", current_task="Export", task_started_at=clock.now)
    await sync(client, clock, sessions_=[running])
    await sync(client, clock, ended_=[ended("a-2", "closed", clock.now)])
    body = await changes(client, cursor)
    assert ids(body) == {"a-1": "running", "a-2": "ended"}
    assert body["total"] == 2
    assert {s["session_id"]: s["end_reason"] for s in body["sessions"]}["a-2"] == "closed"

    # Filters that never change for a session combine with the cursor.
    assert ids(await changes(client, cursor, app="b")) == {}
    assert (await changes(client, cursor, app="b"))["total"] == 1


async def test_kills_and_prototype_clients_are_changes(client: httpx.AsyncClient, clock: FakeClock) -> None:
    proto = (await client.post("/sessions", json={"app_name": "proto"})).json()["session_id"]
    await sync(client, clock, sessions_=[tracked("k-1", clock.now)])
    clock.advance(seconds=PAST_OVERLAP.total_seconds())
    cursor = (await full(client))["cursor"]
    clock.advance(seconds=PAST_OVERLAP.total_seconds())
    assert ids(await changes(client, cursor)) == {}

    assert (await client.post("/sessions/k-1/kill")).status_code == 200
    body = await changes(client, cursor)
    assert ids(body) == {"k-1": "idle"}
    assert body["sessions"][0]["kill_requested"] is True

    # A prototype-style client carries its own heartbeat: it shows up when it beats.
    assert (await client.post(f"/sessions/{proto}/heartbeat")).status_code == 200
    assert set(ids(await changes(client, cursor))) == {"k-1", proto}


async def test_rows_that_went_stale_and_came_back_are_changes(
    client: httpx.AsyncClient, clock: FakeClock, settings: Settings
) -> None:
    await sync(client, clock, sessions_=[tracked("s-1", clock.now)])
    clock.advance(seconds=PAST_OVERLAP.total_seconds())
    cursor = (await full(client))["cursor"]
    clock.advance(seconds=PAST_OVERLAP.total_seconds())
    assert ids(await changes(client, cursor)) == {}

    clock.advance(seconds=settings.stale_after_s)
    body = await changes(client, cursor)
    assert ids(body) == {"s-1": "stale"}  # no write marked it: time did

    clock.advance(seconds=PAST_OVERLAP.total_seconds())
    cursor = (await changes(client, body["cursor"]))["cursor"]
    assert ids(await changes(client, cursor)) == {}  # went stale before this cursor: said once
    await sync(client, clock)  # the agent is back: its heartbeat ends the stale state
    assert ids(await changes(client, cursor)) == {"s-1": "idle"}


async def test_liveness_fields_and_disconnected_state(client: httpx.AsyncClient, clock: FakeClock) -> None:
    t0 = clock.now
    row = tracked("l-1", t0 - timedelta(minutes=5))
    row.update(visibility="hidden", last_interaction_at=(t0 - timedelta(seconds=90)).isoformat())
    await sync(client, clock, sessions_=[row])
    [s] = (await full(client))["sessions"]
    assert (s["visibility"], s["idle_seconds"], s["state"], s["disconnected_at"]) == ("hidden", 90.0, "idle", None)

    row.update(disconnected_at=t0.isoformat())
    await sync(client, clock, sessions_=[row])
    [s] = (await full(client))["sessions"]
    assert s["state"] == "disconnected" and datetime.fromisoformat(s["disconnected_at"]) == t0
    assert [x["session_id"] for x in (await full_with(client, status="disconnected"))] == ["l-1"]
    assert await full_with(client, status="idle") == []

    row.update(disconnected_at=None, visibility="visible")
    await sync(client, clock, sessions_=[row])
    [s] = (await full(client))["sessions"]
    assert (s["state"], s["visibility"]) == ("idle", "visible")
    assert [x["session_id"] for x in (await full_with(client, status="idle"))] == ["l-1"]


async def full_with(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/sessions", params=params)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["sessions"]
    return result


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"changed_since": "2026-01-01T00:00:00"}, "timezone"),
        ({"changed_since": "yesterday"}, "datetime"),
        ({"changed_since": "2026-01-01T00:00:00Z", "status": "idle"}, "status"),
        ({"changed_since": "2026-01-01T00:00:00Z", "q": "x", "limit": 5}, "q, limit"),
    ],
)
async def test_bad_cursor_requests_say_what_is_wrong(
    client: httpx.AsyncClient, params: dict[str, Any], message: str
) -> None:
    response = await client.get("/sessions", params=params)
    assert response.status_code == 422
    assert message in response.text
