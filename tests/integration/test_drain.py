"""Drain and undrain over the REST API and the agent protocol, on SQLite and the real PostgreSQL.

Time is a ``FakeClock``; the only real wait is a bounded long-poll woken by a drain.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx

from session_monitor.server import Settings
from tests.conftest import DatabaseTarget, FakeClock
from tests.helpers import serving

AGENT = "agent-0000aaaa"
OTHER = "agent-1111bbbb"


def info(clock: FakeClock, host: str = "web-1", pid: int = 4242) -> dict[str, Any]:
    return {"host": host, "pid": pid, "started_at": (clock.now - timedelta(hours=1)).isoformat()}


def session(sid: str, clock: FakeClock, app: str = "sales") -> dict[str, Any]:
    return {"session_id": sid, "app_name": app, "started_at": clock.now.isoformat()}


async def sync(client: httpx.AsyncClient, agent: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/agents/{agent}/sync", json=body)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def two_processes(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await sync(client, AGENT, {"agent": info(clock), "full": True, "sessions": [session("s1", clock)]})
    other = {"agent": info(clock, pid=4343), "full": True, "sessions": [session("s2", clock, app="hr")]}
    await sync(client, OTHER, other)


async def test_drain_reaches_the_agent_at_once_and_is_listed_audited_and_undone(client, clock: FakeClock) -> None:
    await two_processes(client, clock)
    poll = asyncio.ensure_future(client.get(f"/agents/{AGENT}/commands", params={"after": 0, "wait": 20}))
    await asyncio.sleep(0.2)
    body = {"host": "web-1", "pid": 4242, "deadline_s": 20, "message": "Deploy at <b>18:00</b>"}
    response = await client.post("/drain", json=body, headers={"X-Session-Monitor-Actor": "ops"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["count"] == 1
    assert answer["processes"][0]["pid"] == 4242
    drain = answer["processes"][0]["drain"]
    assert drain["message"] == "Deploy at <b>18:00</b>"
    assert drain["by"] == "ops"
    # The long-poll is woken by the drain: the agent syncs and learns it from the answer.
    woke = await asyncio.wait_for(poll, 5)
    assert [c["kind"] for c in woke.json()["commands"]] == ["drain"]
    synced = await sync(client, AGENT, {"agent": info(clock)})
    assert datetime.fromisoformat(synced["drain"]["deadline"]) == clock.now + timedelta(seconds=20)
    assert (await sync(client, OTHER, {"agent": info(clock, pid=4343)}))["drain"] is None
    listed = {a["pid"]: a["drain"] for a in (await client.get("/agents")).json()["agents"]}
    assert listed[4343] is None
    assert listed[4242]["message"] == "Deploy at <b>18:00</b>"
    audit = (await client.get("/audit", params={"action": "drain"})).json()["entries"]
    assert audit[0]["target"] == "web-1:4242"
    assert audit[0]["actor"] == "ops"

    undone = await client.post("/undrain", json={"host": "web-1"})
    assert undone.status_code == 200, undone.text
    assert undone.json()["count"] == 2
    assert (await sync(client, AGENT, {"agent": info(clock)}))["drain"] is None
    assert (await client.get("/audit", params={"action": "undrain"})).json()["total"] == 1


async def test_drain_by_app_picks_the_processes_serving_it(client, clock: FakeClock) -> None:
    await two_processes(client, clock)
    response = await client.post("/drain", json={"app": "hr"})
    assert response.status_code == 200, response.text
    assert [p["pid"] for p in response.json()["processes"]] == [4343]
    drain = response.json()["processes"][0]["drain"]
    assert datetime.fromisoformat(drain["deadline"]) == clock.now + timedelta(minutes=10)


async def test_bad_drains_are_refused_and_change_nothing(client, clock: FakeClock) -> None:
    await two_processes(client, clock)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"host": "web-9", "pid": 1}, 404, "no live Panel process for web-9:1"),
        ({"app": "nobody"}, 404, "no live Panel process for app nobody"),
        ({"host": "web-1", "at": (clock.now - timedelta(seconds=1)).isoformat()}, 422, "in the past"),
        ({"host": "web-1", "at": (clock.now + timedelta(days=8)).isoformat()}, 422, "more than 7 days"),
        ({"host": "web-1", "deadline_s": 8 * 86400}, 422, "deadline_s"),
        ({"host": "web-1", "deadline_s": 0}, 422, "deadline_s"),
        ({"host": "web-1", "message": ""}, 422, "message"),
        ({"host": "web-1", "message": "x" * 501}, 422, "message"),
        ({"host": "web-1", "message": "bell\x07"}, 422, "message"),
        ({"pid": 4242}, 422, "pid needs host"),
        ({"host": "web-1", "app": "sales"}, 422, "not both"),
        ({}, 422, "not neither"),
    ]
    for body, status, detail in cases:
        response = await client.post("/drain", json=body)
        assert response.status_code == status, (body, response.text)
        assert detail in response.json()["detail"], (body, response.text)
    assert all(a["drain"] is None for a in (await client.get("/agents")).json()["agents"])
    assert (await client.get("/audit")).json()["total"] == 0


async def test_a_drain_survives_a_server_restart(settings: Settings, db_target: DatabaseTarget) -> None:
    clock = FakeClock()
    async with serving(settings, clock) as (_, client):
        await two_processes(client, clock)
        assert (await client.post("/drain", json={"host": "web-1", "pid": 4343})).status_code == 200
    async with serving(settings, clock) as (_, client):
        answer = await sync(client, OTHER, {"agent": info(clock, pid=4343)})
        assert answer["drain"] is not None


async def test_the_admin_token_is_needed(db_target: DatabaseTarget) -> None:
    settings = db_target.settings(admin_token="admin-secret-7f3a9c1e5b2d", client_token="client-secret-4e8b2a6d0c9f")
    async with serving(settings) as (_, client):
        refused = await client.post(
            "/drain", json={"host": "web-1"}, headers={"Authorization": "Bearer client-secret-4e8b2a6d0c9f"}
        )
        assert refused.status_code == 403
        assert (await client.post("/undrain", json={"host": "web-1"})).status_code == 401
