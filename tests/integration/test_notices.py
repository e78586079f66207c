"""Announcements and kills with notice through the REST API and the agent protocol, on SQLite and PostgreSQL.

Time is a ``FakeClock``; the pending-kill runner is driven with ``run_once`` after moving the clock.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from session_monitor.server.reaper import reap_once
from tests.conftest import FakeClock
from tests.helpers import get, serving
from tests.integration.test_agent_protocol import AGENT, OTHER_AGENT, agent_info, fetch, sync, tracked

ACTOR = {"X-Session-Monitor-Actor": "ops"}


async def two_sessions(client: httpx.AsyncClient, clock: FakeClock) -> dict[str, Any]:
    """Agent AGENT on web-1 with s1 (sales) and s2 (hr); OTHER_AGENT on web-2 with s3 (sales)."""
    start = clock.now - timedelta(minutes=1)
    await sync(client, clock, sessions_=[tracked("s1", start, "sales"), tracked("s2", start, "hr")])
    return await sync(client, clock, OTHER_AGENT, info=agent_info(clock, host="web-2"),
                      sessions_=[tracked("s3", start, "sales")])  # fmt: skip


async def announce(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/announcements", json=body, headers=ACTOR)


async def audit_actions(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/audit")
    return [e["action"] for e in response.json()["entries"]]


async def test_an_announcement_reaches_its_agents_at_once_and_goes_on_removal(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    first = await two_sessions(client, clock)
    assert first["notices"] == [] and first["notices_rev"]
    # A long-poll showing the current (empty) set waits; one for a new announcement answers at once.
    poll = asyncio.create_task(fetch(client, after=0, wait=5, notices=first["notices_rev"]))
    await asyncio.sleep(0.2)
    assert not poll.done()
    created = await announce(client, message="Maintenance at 18:00", level="warning", apps=["sales"])
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["active"] and body["created_by"] == "ops" and body["apps"] == ["sales"]
    answer = await asyncio.wait_for(poll, 2)
    notice = {"id": f"announcement:{body['id']}", "kind": "announcement", "message": "Maintenance at 18:00",
              "level": "warning", "apps": ["sales"], "session_ids": None, "deadline": None, "until": None}  # fmt: skip
    assert answer["notices"] == [notice] and answer["notices_rev"] != first["notices_rev"]
    # The sync answer carries the same set (an agent that was away gets it there).
    synced = await sync(client, clock)
    assert synced["notices"] == [notice] and synced["notices_rev"] == answer["notices_rev"]
    listed = (await client.get("/announcements")).json()["announcements"]
    assert [a["id"] for a in listed] == [body["id"]]

    assert (await client.delete(f"/announcements/{body['id']}", headers=ACTOR)).status_code == 200
    after = await fetch(client, after=0, wait=0, notices=answer["notices_rev"])
    assert after["notices"] == [] and (await client.get("/announcements")).json()["announcements"] == []
    gone = await client.delete(f"/announcements/{body['id']}", headers=ACTOR)
    assert gone.status_code == 404 and "no active announcement" in gone.json()["detail"]
    history = (await client.get("/announcements", params={"include_inactive": True})).json()["announcements"]
    assert history[0]["removed_by"] == "ops" and not history[0]["active"]
    assert {"announce", "unannounce"} <= set(await audit_actions(client))


async def test_hosts_and_expiry_decide_which_agents_show_an_announcement(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await two_sessions(client, clock)
    created = await announce(
        client, message="web-2 restarts", hosts=["web-2"], until=(clock.now + timedelta(minutes=5)).isoformat()
    )
    assert created.status_code == 201, created.text
    assert (await sync(client, clock))["notices"] == []
    other = await sync(client, clock, OTHER_AGENT, info=agent_info(clock, host="web-2"))
    assert [n["message"] for n in other["notices"]] == ["web-2 restarts"]
    assert other["notices"][0]["until"] is not None
    clock.advance(minutes=6)
    assert (await sync(client, clock, OTHER_AGENT, info=agent_info(clock, host="web-2")))["notices"] == []
    assert (await client.get("/announcements")).json()["announcements"] == []


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"message": ""}, 422, "message"),
        ({"message": "   "}, 422, "blank"),
        ({"message": "x" * 501}, 422, "500"),
        ({"message": "bell\x07"}, 422, "control"),
        ({"message": "hi", "level": "loud"}, 422, "level"),
        ({"message": "hi", "until": "2025-01-01T00:00:00+00:00"}, 422, "future"),
        ({"message": "hi", "until": "2026-01-09T12:00:00+00:00"}, 422, "7 days"),
        ({"message": "hi", "until": "2026-01-01T13:00:00"}, 422, "until"),
        ({"message": "hi", "apps": ["nope"]}, 404, "unknown app 'nope'"),
        ({"message": "hi", "hosts": ["db-9"]}, 404, "unknown host 'db-9'"),
        ({"message": "hi", "session_ids": ["zz"]}, 404, "no live session 'zz'"),
        ({"message": "hi", "apps": []}, 422, "apps"),
    ],
)
async def test_bad_announcements_are_refused_and_store_nothing(
    client: httpx.AsyncClient, clock: FakeClock, body: dict[str, Any], status: int, says: str
) -> None:
    await two_sessions(client, clock)
    response = await announce(client, **body)
    assert response.status_code == status, response.text
    assert says in response.text
    assert (await client.get("/announcements", params={"include_inactive": True})).json()["announcements"] == []


async def test_a_kill_with_notice_counts_down_can_be_cancelled_and_otherwise_runs_at_its_deadline(
    app: Any, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await two_sessions(client, clock)
    scheduled = await client.post("/sessions/s1/kill", json={"reason": "deploy", "delay_s": 30}, headers=ACTOR)
    assert scheduled.status_code == 200, scheduled.text
    first = scheduled.json()
    assert first["status"] == "kill_scheduled" and first["pending_kill_id"]
    notices = (await sync(client, clock))["notices"]
    deadline = notices[0].pop("deadline")
    assert datetime.fromisoformat(deadline) == clock.now + timedelta(seconds=30)
    assert notices == [{"id": f"kill:{first['pending_kill_id']}", "kind": "kill", "message": "deploy",
                        "level": "error", "apps": None, "session_ids": ["s1"], "until": None}]  # fmt: skip
    # Only the agent of s1 is shown a session's countdown.
    assert (await sync(client, clock, OTHER_AGENT, info=agent_info(clock, host="web-2")))["notices"] == []

    clock.advance(seconds=10)
    cancelled = await client.delete(f"/pending-kills/{first['pending_kill_id']}", headers=ACTOR)
    assert cancelled.status_code == 200, cancelled.text
    assert (await sync(client, clock))["notices"] == []
    clock.advance(seconds=30)
    await app.state.kill_runner.run_once()
    assert not (await get(client, "s1"))["kill_requested"]
    again = await client.delete(f"/pending-kills/{first['pending_kill_id']}", headers=ACTOR)
    assert again.status_code == 404

    second = (await client.post("/sessions/s1/kill", json={"reason": "deploy", "delay_s": 30}, headers=ACTOR)).json()
    pending = (await client.get("/pending-kills")).json()["pending_kills"]
    assert [(p["id"], p["state"], p["seconds_left"]) for p in pending] == [(second["pending_kill_id"], "pending", 30)]
    clock.advance(seconds=29)
    await app.state.kill_runner.run_once()
    assert not (await get(client, "s1"))["kill_requested"]
    clock.advance(seconds=1)
    await app.state.kill_runner.run_once()
    session = await get(client, "s1")
    assert session["kill_requested"] and session["kill_reason"] == "deploy" and session["kill_requested_by"] == "ops"
    queued = await fetch(client, after=0, wait=0)
    assert [(c["kind"], c["session_id"]) for c in queued["commands"]] == [("kill", "s1")]
    done = (await client.get("/pending-kills", params={"include_done": True})).json()["pending_kills"]
    assert {p["state"] for p in done} == {"cancelled", "done"}
    assert (await client.get("/pending-kills")).json()["pending_kills"] == []
    actions = await audit_actions(client)
    assert actions.count("kill_scheduled") == 2 and "kill_cancelled" in actions and "kill" in actions


async def test_kill_all_with_notice_reaches_every_agent_of_the_app_and_kills_all_at_the_deadline(
    app: Any, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await two_sessions(client, clock)
    at = (clock.now + timedelta(minutes=5)).isoformat()
    response = await client.post("/apps/sales/kill-all", json={"at": at, "reason": "upgrade"}, headers=ACTOR)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["killed_count"] == 0 and body["live_count"] == 2 and body["pending_kill_id"]
    for agent, host in ((AGENT, "web-1"), (OTHER_AGENT, "web-2")):
        notices = (await sync(client, clock, agent, info=agent_info(clock, host=host)))["notices"]
        assert [(n["kind"], n["apps"]) for n in notices] == [("kill", ["sales"])]
    clock.advance(minutes=5)
    await app.state.kill_runner.run_once()
    assert (await get(client, "s1"))["kill_requested"] and (await get(client, "s3"))["kill_requested"]
    assert not (await get(client, "s2"))["kill_requested"]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/sessions/s1/kill", {"delay_s": 0}, 422, "delay_s"),
        ("/sessions/s1/kill", {"delay_s": 8 * 86400}, 422, "delay_s"),
        ("/sessions/s1/kill", {"delay_s": "30"}, 422, "delay_s"),
        ("/sessions/s1/kill", {"at": "2025-01-01T00:00:00+00:00"}, 422, "future"),
        ("/sessions/s1/kill", {"at": "2026-01-09T12:00:00+00:00"}, 422, "7 days"),
        ("/sessions/s1/kill", {"delay_s": 5, "at": "2026-01-01T12:10:00+00:00"}, 422, "not both"),
        ("/sessions/nope/kill", {"delay_s": 5}, 404, "nope"),
        ("/apps/nope/kill-all", {"delay_s": 5}, 404, "unknown app 'nope'"),
    ],
)
async def test_bad_kills_with_notice_are_refused_and_store_nothing(
    client: httpx.AsyncClient, clock: FakeClock, path: str, body: dict[str, Any], status: int, says: str
) -> None:
    await two_sessions(client, clock)
    response = await client.post(path, json=body, headers=ACTOR)
    assert response.status_code == status, response.text
    assert says in response.text
    assert (await client.get("/pending-kills", params={"include_done": True})).json()["pending_kills"] == []
    assert not (await get(client, "s1"))["kill_requested"]


async def test_notices_survive_a_server_restart(settings: Any, clock: FakeClock) -> None:
    async with serving(settings, clock) as (_app, client):
        await two_sessions(client, clock)
        assert (await announce(client, message="still here")).status_code == 201
        assert (await client.post("/sessions/s2/kill", json={"delay_s": 600}, headers=ACTOR)).status_code == 200
    async with serving(settings, clock) as (_app, client):
        notices = (await sync(client, clock))["notices"]
        assert [n["kind"] for n in notices] == ["announcement", "kill"]


async def test_past_notices_are_purged_with_the_audit_log(
    app: Any, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await two_sessions(client, clock)
    removed = (await announce(client, message="old news")).json()["id"]
    await client.delete(f"/announcements/{removed}", headers=ACTOR)
    kept = (await announce(client, message="still on")).json()["id"]
    cancelled = (await client.post("/sessions/s1/kill", json={"delay_s": 60}, headers=ACTOR)).json()
    await client.delete(f"/pending-kills/{cancelled['pending_kill_id']}", headers=ACTOR)
    clock.advance(days=91)
    await reap_once(app.state.store, expire_after_s=600, history_retention_s=7 * 86400, audit_retention_s=90 * 86400)
    every = (await client.get("/announcements", params={"include_inactive": True})).json()["announcements"]
    assert [a["id"] for a in every] == [kept]
    assert (await client.get("/pending-kills", params={"include_done": True})).json()["pending_kills"] == []
