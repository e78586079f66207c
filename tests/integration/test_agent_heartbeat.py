"""An agent's sync is the heartbeat of all its live sessions without writing their rows (both stores; FakeClock)."""

from __future__ import annotations

from typing import Any

import httpx
import sqlalchemy as sa

from session_monitor.store.models import sessions
from tests.conftest import FakeClock
from tests.helpers import get
from tests.integration.test_agent_protocol import AGENT, reap, sync, tracked, ts


async def stored(app: Any) -> list[tuple[Any, ...]]:
    def read(conn: sa.Connection) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.execute(sa.select(sessions).order_by(sessions.c.session_id)).all()]

    result: list[tuple[Any, ...]] = await app.state.store.db.read(read)
    return result


async def test_syncs_heartbeat_sessions_through_the_agent_row(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    await sync(client, clock, full=True, sessions_=[tracked(f"s-{i}", clock.now) for i in range(50)])
    rows = await stored(app)
    for _ in range(30):  # 150 s of syncs that carry no change: longer than the stale threshold
        clock.advance(seconds=5)
        await sync(client, clock)
    assert await stored(app) == rows  # not one session row written
    row = await get(client, "s-7")
    assert (row["state"], row["is_stale"], ts(row["last_heartbeat"])) == ("idle", False, clock.now)
    listed = (await client.get("/sessions", params={"status": "idle"})).json()
    assert listed["total"] == 50
    assert (await client.get("/sessions", params={"status": "stale"})).json()["total"] == 0
    metrics = (await client.get("/metrics")).text
    assert 'session_monitor_sessions{app="app",state="idle"} 50.0' in metrics


async def test_a_silent_agents_sessions_go_stale_expire_and_come_back(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    settings = app.state.settings
    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now), tracked("s-2", clock.now)])
    clock.advance(seconds=60)
    await sync(client, clock)
    cursor = (await client.get("/sessions")).json()["cursor"]

    clock.advance(seconds=settings.stale_after_s + 1)
    assert {s["state"] for s in (await client.get("/sessions")).json()["sessions"]} == {"stale"}
    assert (await client.get("/sessions", params={"status": "stale"})).json()["total"] == 2
    changed = (await client.get("/sessions", params={"changed_since": cursor})).json()
    assert {s["session_id"]: s["state"] for s in changed["sessions"]} == {"s-1": "stale", "s-2": "stale"}

    # Back before expiry: live again, and a live view is told so.
    cursor = changed["cursor"]
    clock.advance(seconds=5)
    await sync(client, clock)
    changed = (await client.get("/sessions", params={"changed_since": cursor})).json()
    assert {s["session_id"]: s["state"] for s in changed["sessions"]} == {"s-1": "idle", "s-2": "idle"}

    # Silent past expiry: the reaper ends them, timed from the agent's last sync.
    seen = clock.now
    clock.advance(seconds=settings.expire_after_s - 1)
    await reap(app)
    assert (await get(client, "s-1"))["state"] == "stale"
    clock.advance(seconds=2)
    await reap(app)
    row = await get(client, "s-1")
    assert (row["end_reason"], row["ended_by"]) == ("expired", "reaper")
    assert ts(row["ended_at"]) == clock.now
    assert (clock.now - seen).total_seconds() > settings.expire_after_s


async def test_other_agents_and_prototype_sessions_keep_their_own_heartbeat(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    await sync(client, clock, sessions_=[tracked("mine", clock.now)])
    await sync(client, clock, "agent-2222cccc", sessions_=[tracked("theirs", clock.now)])
    proto = (await client.post("/sessions", json={"app_name": "proto"})).json()["session_id"]
    clock.advance(seconds=app.state.settings.stale_after_s + 1)
    await sync(client, clock, AGENT)
    states = {s["session_id"]: s["state"] for s in (await client.get("/sessions")).json()["sessions"]}
    assert states == {"mine": "idle", "theirs": "stale", proto: "stale"}
    assert (await client.post(f"/sessions/{proto}/heartbeat")).status_code == 200
    assert (await get(client, proto))["state"] == "idle"
