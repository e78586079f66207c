"""The agent protocol (batched sync, command queue and long-poll, agents list), on SQLite and the real PostgreSQL.

Time is a ``FakeClock`` the tests move forward; the only real waits are the
bounded long-polls of ``GET /agents/{id}/commands?wait=``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from session_monitor.protocol import MAX_SYNC_SESSIONS
from session_monitor.server import Settings
from session_monitor.server.reaper import reap_once
from session_monitor.store.models import agents, commands, sessions
from tests.conftest import DatabaseTarget, FakeClock
from tests.helpers import get, live_ids, serving

AGENT = "agent-0000aaaa"
OTHER_AGENT = "agent-1111bbbb"
ACTOR_HEADER = "X-Session-Monitor-Actor"
ADMIN = "admin-secret-7f3a9c1e5b2d"
CLIENT = "client-secret-4e8b2a6d0c9f"

Snapshot = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]


# -- helpers -----------------------------------------------------------------------------------------------------------


def ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def iso(value: datetime) -> str:
    return value.isoformat()


def agent_info(clock: FakeClock, host: str = "web-1", pid: int = 4242, **extra: Any) -> dict[str, Any]:
    info: dict[str, Any] = {
        "host": host,
        "pid": pid,
        "command": "panel serve app.py --num-procs 2",
        "versions": {"panel": "1.9.4", "bokeh": "3.9.2"},
        "cpu_percent": 12.5,
        "rss_bytes": 123_456_789,
        "started_at": iso(clock.now - timedelta(hours=1)),
    }
    info.update(extra)
    return info


def tracked(
    session_id: str,
    started_at: datetime,
    app_name: str = "app",
    status: str = "idle",
    current_task: str | None = None,
    task_started_at: datetime | None = None,
    user_id: str | None = None,
) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "app_name": app_name,
        "user_id": user_id,
        "status": status,
        "current_task": current_task,
        "task_started_at": None if task_started_at is None else iso(task_started_at),
        "started_at": iso(started_at),
    }


def ended(session_id: str, reason: str, at: datetime) -> dict[str, Any]:
    return {"session_id": session_id, "reason": reason, "ended_at": iso(at)}


async def sync(
    client: httpx.AsyncClient,
    clock: FakeClock,
    agent_id: str = AGENT,
    *,
    sessions_: list[dict[str, Any]] | None = None,
    ended_: list[dict[str, Any]] | None = None,
    full: bool = False,
    exiting: bool = False,
    info: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    body = {
        "agent": info or agent_info(clock),
        "full": full,
        "exiting": exiting,
        "sessions": sessions_ or [],
        "ended": ended_ or [],
    }
    response = await client.post(f"/agents/{agent_id}/sync", json=body, headers=headers or {})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def list_agents(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/agents", params=params)
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["agents"]
    return result


async def fetch(client: httpx.AsyncClient, agent_id: str = AGENT, **params: Any) -> dict[str, Any]:
    response = await client.get(f"/agents/{agent_id}/commands", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def kill(client: httpx.AsyncClient, session_id: str, reason: str | None = None, actor: str = "ops") -> None:
    response = await client.post(f"/sessions/{session_id}/kill", json={"reason": reason}, headers={ACTOR_HEADER: actor})
    assert response.status_code == 200, response.text


async def snapshot(app: Any) -> Snapshot:
    def read(conn: sa.Connection) -> Snapshot:
        s = conn.execute(sa.select(sessions).order_by(sessions.c.session_id)).all()
        a = conn.execute(sa.select(agents).order_by(agents.c.agent_id)).all()
        c = conn.execute(sa.select(commands).order_by(commands.c.id)).all()
        return [tuple(r) for r in s], [tuple(r) for r in a], [tuple(r) for r in c]

    result: Snapshot = await app.state.store.db.read(read)
    return result


async def command_rows(app: Any) -> list[dict[str, Any]]:
    def read(conn: sa.Connection) -> list[dict[str, Any]]:
        return [dict(r) for r in conn.execute(sa.select(commands).order_by(commands.c.id)).mappings().all()]

    result: list[dict[str, Any]] = await app.state.store.db.read(read)
    return result


async def agent_ids_stored(app: Any) -> set[str]:
    def read(conn: sa.Connection) -> set[str]:
        return {r[0] for r in conn.execute(sa.select(agents.c.agent_id)).all()}

    result: set[str] = await app.state.store.db.read(read)
    return result


async def reap(app: Any) -> None:
    s: Settings = app.state.settings
    await reap_once(
        app.state.store,
        expire_after_s=s.expire_after_s,
        history_retention_s=s.history_retention_s,
        audit_retention_s=s.audit_retention_s,
        agent_store=app.state.agent_store,
    )


async def wait_for_waiters(app: Any, count: int, timeout_s: float = 5.0) -> None:
    """Poll until ``count`` long-polls are held open by the hub (no fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while app.state.hub.waiting < count:
        assert time.monotonic() < deadline, f"only {app.state.hub.waiting} long-polls waiting, expected {count}"
        await asyncio.sleep(0.005)


# -- sync: agents and sessions -----------------------------------------------------------------------------------------


async def test_first_sync_of_unknown_agent_asks_for_resync(client: httpx.AsyncClient, clock: FakeClock) -> None:
    first = await sync(client, clock, AGENT)
    assert first["resync"] is True
    # known from now on
    assert (await sync(client, clock, AGENT))["resync"] is False

    # an unknown agent whose first sync is already full needs no resync
    assert (await sync(client, clock, OTHER_AGENT, full=True))["resync"] is False
    assert (await sync(client, clock, OTHER_AGENT))["resync"] is False


async def test_sync_answer_echoes_interval_and_server_time(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target.settings(sync_interval_s=2.5), clock) as (_, client):
        answer = await sync(client, clock, full=True)
        assert answer["sync_interval_s"] == 2.5
        assert ts(answer["server_time"]) == clock.now
        assert answer["commands"] == []


async def test_sync_answer_echoes_default_interval(client: httpx.AsyncClient, app: Any, clock: FakeClock) -> None:
    answer = await sync(client, clock, full=True)
    assert answer["sync_interval_s"] == app.state.settings.sync_interval_s == 5.0


async def test_sync_upserts_sessions_with_placement(client: httpx.AsyncClient, clock: FakeClock) -> None:
    started = clock.now - timedelta(minutes=5)
    task_started = clock.now - timedelta(seconds=30)
    await sync(
        client,
        clock,
        info=agent_info(clock, host="web-7", pid=777),
        full=True,
        sessions_=[
            tracked("s-1", started, app_name="reports", user_id="alice"),
            tracked(
                "s-2", started, app_name="pool", status="running", current_task="fit", task_started_at=task_started
            ),
        ],
    )
    one = await get(client, "s-1")
    assert (one["app_name"], one["user_id"], one["host"], one["pid"], one["agent_id"]) == (
        "reports",
        "alice",
        "web-7",
        777,
        AGENT,
    )
    assert (one["status"], one["current_task"], one["task_started_at"]) == ("idle", None, None)
    assert ts(one["start_time"]) == started
    assert ts(one["last_heartbeat"]) == clock.now
    assert one["state"] == "idle"
    assert one["kill_requested"] is False
    assert one["ended_at"] is None

    two = await get(client, "s-2")
    assert (two["host"], two["pid"], two["agent_id"]) == ("web-7", 777, AGENT)
    assert (two["status"], two["current_task"], two["state"]) == ("running", "fit", "running")
    assert ts(two["task_started_at"]) == task_started
    assert two["task_seconds"] == pytest.approx(30)
    assert ts(two["start_time"]) == started
    assert set(await live_ids(client)) == {"s-1", "s-2"}


async def test_timestamps_with_an_offset_are_stored_as_utc(client: httpx.AsyncClient, clock: FakeClock) -> None:
    started = clock.now - timedelta(minutes=10)
    task_started = clock.now - timedelta(minutes=1)
    plus2 = timezone(timedelta(hours=2))
    session = tracked(
        "s-1", started.astimezone(plus2), status="running", task_started_at=task_started.astimezone(plus2)
    )
    info = agent_info(clock, started_at=iso((clock.now - timedelta(days=1)).astimezone(timezone(timedelta(hours=-7)))))
    await sync(client, clock, full=True, info=info, sessions_=[session])
    row = await get(client, "s-1")
    assert row["start_time"] == iso(started)
    assert row["task_started_at"] == iso(task_started)
    [agent] = await list_agents(client)
    assert agent["started_at"] == iso(clock.now - timedelta(days=1))
    clock.advance(seconds=5)
    await sync(client, clock, ended_=[ended("s-1", "closed", (clock.now - timedelta(seconds=1)).astimezone(plus2))])
    assert (await get(client, "s-1"))["ended_at"] == iso(clock.now - timedelta(seconds=1))


async def test_start_time_in_the_future_is_clamped_to_now(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await sync(client, clock, full=True, sessions_=[tracked("s-future", clock.now + timedelta(hours=3))])
    assert ts((await get(client, "s-future"))["start_time"]) == clock.now


async def test_second_sync_updates_state_but_keeps_start_time(client: httpx.AsyncClient, clock: FakeClock) -> None:
    started = clock.now - timedelta(minutes=2)
    await sync(client, clock, full=True, sessions_=[tracked("s-1", started, app_name="reports", user_id="alice")])

    clock.advance(seconds=40)
    task_started = clock.now - timedelta(seconds=1)
    # an agent that lost the start time sends another: the stored one stays
    await sync(
        client,
        clock,
        sessions_=[
            tracked(
                "s-1",
                clock.now,
                app_name="reports",
                user_id="alice",
                status="running",
                current_task="export",
                task_started_at=task_started,
            )
        ],
    )
    row = await get(client, "s-1")
    assert ts(row["start_time"]) == started
    assert (row["status"], row["current_task"]) == ("running", "export")
    assert ts(row["task_started_at"]) == task_started
    assert ts(row["last_heartbeat"]) == clock.now
    assert (row["app_name"], row["user_id"], row["agent_id"]) == ("reports", "alice", AGENT)

    clock.advance(seconds=10)
    await sync(client, clock, sessions_=[tracked("s-1", started, app_name="reports", user_id="alice")])
    row = await get(client, "s-1")
    assert (row["status"], row["current_task"], row["task_started_at"]) == ("idle", None, None)
    assert ts(row["start_time"]) == started


async def test_every_sync_heartbeats_all_live_sessions_of_the_agent(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    t0 = clock.now
    await sync(client, clock, full=True, sessions_=[tracked(f"a-{i}", t0) for i in range(3)])
    await sync(client, clock, OTHER_AGENT, full=True, sessions_=[tracked("b-0", t0)])
    await sync(client, clock, sessions_=[], ended_=[ended("a-2", "closed", t0)])

    clock.advance(seconds=90)
    answer = await sync(client, clock, sessions_=[])  # nothing changed: still the heartbeat of all
    assert answer["resync"] is False
    for sid in ("a-0", "a-1"):
        row = await get(client, sid)
        assert ts(row["last_heartbeat"]) == clock.now
        assert ts(row["start_time"]) == t0
    # the other agent's session and the ended one are not touched
    assert ts((await get(client, "b-0"))["last_heartbeat"]) == t0
    gone = await get(client, "a-2")
    assert ts(gone["last_heartbeat"]) == t0
    assert gone["end_reason"] == "closed"

    # past stale_after, only the silent agent's session is stale
    clock.advance(seconds=60)
    await sync(client, clock)
    assert (await get(client, "a-0"))["is_stale"] is False
    assert (await get(client, "b-0"))["is_stale"] is True


@pytest.mark.parametrize("reason", ["closed", "browser_lost", "process_exit"])
async def test_ended_sessions_keep_their_reason(client: httpx.AsyncClient, clock: FakeClock, reason: str) -> None:
    t0 = clock.now
    await sync(client, clock, full=True, sessions_=[tracked("s-end", t0, app_name="reports"), tracked("s-keep", t0)])
    clock.advance(seconds=30)
    ended_at = clock.now - timedelta(seconds=2)
    await sync(client, clock, ended_=[ended("s-end", reason, ended_at)])

    assert set(await live_ids(client)) == {"s-keep"}
    response = await client.get("/history")
    assert response.status_code == 200
    [row] = response.json()["sessions"]
    assert row["session_id"] == "s-end"
    assert (row["end_reason"], row["ended_by"], row["state"]) == (reason, "agent", "ended")
    assert ts(row["ended_at"]) == ended_at
    assert (await get(client, "s-keep"))["ended_at"] is None


async def test_end_time_in_the_future_is_clamped_to_now(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now)])
    await sync(client, clock, ended_=[ended("s-1", "closed", clock.now + timedelta(days=1))])
    assert ts((await get(client, "s-1"))["ended_at"]) == clock.now


async def test_agent_cannot_end_another_agents_session(client: httpx.AsyncClient, clock: FakeClock) -> None:
    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now)])
    await sync(client, clock, OTHER_AGENT, full=True, ended_=[ended("s-1", "closed", clock.now)])
    row = await get(client, "s-1")
    assert row["ended_at"] is None
    assert row["agent_id"] == AGENT


@pytest.mark.parametrize("reason", ["closed", "browser_lost", "process_exit"])
async def test_session_whose_kill_was_requested_ends_as_killed(
    client: httpx.AsyncClient, clock: FakeClock, reason: str
) -> None:
    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now), tracked("s-2", clock.now)])
    await kill(client, "s-1", reason="runaway")
    clock.advance(seconds=1)
    await sync(client, clock, ended_=[ended("s-1", reason, clock.now), ended("s-2", reason, clock.now)])
    killed, other = await get(client, "s-1"), await get(client, "s-2")
    assert (killed["end_reason"], killed["ended_by"]) == ("killed", "agent")
    assert (other["end_reason"], other["ended_by"]) == (reason, "agent")


async def test_full_sync_ends_sessions_the_agent_no_longer_has(client: httpx.AsyncClient, clock: FakeClock) -> None:
    t0 = clock.now
    await sync(client, clock, full=True, sessions_=[tracked(f"s-{i}", t0) for i in range(4)])
    await sync(client, clock, OTHER_AGENT, full=True, sessions_=[tracked("b-0", t0)])
    await kill(client, "s-3")

    clock.advance(seconds=5)
    answer = await sync(client, clock, full=True, sessions_=[tracked("s-0", t0)])
    assert answer["resync"] is False
    assert set(await live_ids(client)) == {"s-0", "b-0"}
    for sid in ("s-1", "s-2"):
        row = await get(client, sid)
        assert (row["end_reason"], row["ended_by"]) == ("closed", "agent")
        assert ts(row["ended_at"]) == clock.now
    assert (await get(client, "s-3"))["end_reason"] == "killed"
    assert ts((await get(client, "s-0"))["last_heartbeat"]) == clock.now


async def test_full_sync_right_after_a_sync_still_ends_missing_sessions(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    """No clock tick between two syncs (a coarse clock, or a resync answered at once): still ends them."""
    await sync(client, clock, sessions_=[tracked("s-0", clock.now), tracked("s-1", clock.now)])
    await sync(client, clock, full=True, sessions_=[tracked("s-0", clock.now)])
    assert set(await live_ids(client)) == {"s-0"}
    assert (await get(client, "s-1"))["end_reason"] == "closed"


async def test_exiting_ends_remaining_sessions_and_hides_the_agent(client: httpx.AsyncClient, clock: FakeClock) -> None:
    t0 = clock.now
    await sync(client, clock, full=True, sessions_=[tracked(f"s-{i}", t0) for i in range(3)])
    await sync(client, clock, OTHER_AGENT, full=True, sessions_=[tracked("b-0", t0)], info=agent_info(clock, "web-2"))
    assert {a["agent_id"] for a in await list_agents(client)} == {AGENT, OTHER_AGENT}

    clock.advance(seconds=3)
    await sync(client, clock, exiting=True, ended_=[ended("s-0", "browser_lost", clock.now)])
    assert set(await live_ids(client)) == {"b-0"}
    assert (await get(client, "s-0"))["end_reason"] == "browser_lost"
    for sid in ("s-1", "s-2"):
        row = await get(client, sid)
        assert (row["end_reason"], row["ended_by"]) == ("process_exit", "agent")
        assert ts(row["ended_at"]) == clock.now

    assert [a["agent_id"] for a in await list_agents(client)] == [OTHER_AGENT]
    everyone = {a["agent_id"]: a for a in await list_agents(client, include_exited="true")}
    assert set(everyone) == {AGENT, OTHER_AGENT}
    gone = everyone[AGENT]
    assert ts(gone["exited_at"]) == clock.now
    assert gone["session_count"] == 0
    assert gone["apps"] == []
    assert gone["is_stale"] is False
    assert everyone[OTHER_AGENT]["exited_at"] is None


@pytest.mark.parametrize("via", ["reaper", "cleanup"])
async def test_expired_session_is_revived_by_its_agent(
    client: httpx.AsyncClient, app: Any, clock: FakeClock, via: str
) -> None:
    t0 = clock.now
    await sync(client, clock, full=True, sessions_=[tracked("s-1", t0, app_name="reports")])
    clock.advance(seconds=app.state.settings.expire_after_s + 60)
    if via == "reaper":
        await reap(app)
    else:
        response = await client.delete("/sessions/stale", params={"older_than_minutes": 10})
        assert response.json() == {"deleted_count": 1}
    assert (await get(client, "s-1"))["end_reason"] == "expired"
    assert await live_ids(client) == []

    # the agent was only cut off: its next (full) sync brings the session back
    clock.advance(seconds=5)
    answer = await sync(client, clock, full=True, sessions_=[tracked("s-1", t0, app_name="reports")])
    assert answer["commands"] == []
    row = await get(client, "s-1")
    assert (row["ended_at"], row["end_reason"], row["ended_by"]) == (None, None, None)
    assert row["state"] == "idle"
    assert ts(row["last_heartbeat"]) == clock.now
    assert ts(row["start_time"]) == t0
    assert set(await live_ids(client)) == {"s-1"}


async def test_session_whose_browser_came_back_after_the_grace_is_live_again(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    t0 = clock.now
    await sync(client, clock, sessions_=[tracked("s-1", t0)])
    clock.advance(seconds=3)
    await sync(client, clock, ended_=[ended("s-1", "browser_lost", clock.now)])
    assert (await get(client, "s-1"))["end_reason"] == "browser_lost"
    clock.advance(seconds=30)  # the laptop wakes up: the page reconnects under the same id
    await sync(client, clock, sessions_=[tracked("s-1", clock.now)])
    row = await get(client, "s-1")
    assert (row["state"], row["end_reason"], row["ended_at"]) == ("idle", None, None)


async def test_killed_session_reported_again_is_not_revived(client: httpx.AsyncClient, clock: FakeClock) -> None:
    t0 = clock.now
    await sync(client, clock, full=True, sessions_=[tracked("s-1", t0), tracked("s-2", t0)])
    await kill(client, "s-1", reason="abuse", actor="carol")
    clock.advance(seconds=1)
    await sync(client, clock, ended_=[ended("s-1", "closed", clock.now), ended("s-2", "closed", clock.now)])
    killed_at = clock.now

    # the browser reconnects and re-creates both sessions under the same ids
    clock.advance(seconds=2)
    answer = await sync(client, clock, sessions_=[tracked("s-1", clock.now), tracked("s-2", clock.now)])
    assert answer["commands"] == [{"id": 0, "kind": "kill", "session_id": "s-1", "reason": "abuse", "actor": "carol"}]
    row = await get(client, "s-1")
    assert (row["end_reason"], row["state"]) == ("killed", "ended")
    assert ts(row["ended_at"]) == killed_at
    assert ts(row["last_heartbeat"]) == t0
    # a session that ended normally is not revived either, and gets no kill
    assert (await get(client, "s-2"))["end_reason"] == "closed"
    assert await live_ids(client) == []


async def test_sync_answer_lists_pending_kills(client: httpx.AsyncClient, clock: FakeClock) -> None:
    t0 = clock.now
    await sync(client, clock, full=True, sessions_=[tracked(f"s-{i}", t0) for i in range(3)])
    await sync(client, clock, OTHER_AGENT, full=True, sessions_=[tracked("b-0", t0)])
    await kill(client, "s-0", reason="maintenance", actor="ops@example")
    await kill(client, "b-0", reason="other agent's")

    answer = await sync(client, clock)
    assert answer["commands"] == [
        {"id": 0, "kind": "kill", "session_id": "s-0", "reason": "maintenance", "actor": "ops@example"}
    ]
    # stored intent: repeated on every sync until the session ends
    assert [c["session_id"] for c in (await sync(client, clock))["commands"]] == ["s-0"]
    await sync(client, clock, ended_=[ended("s-0", "closed", clock.now)])
    assert (await sync(client, clock))["commands"] == []
    assert [c["session_id"] for c in (await sync(client, clock, OTHER_AGENT))["commands"]] == ["b-0"]


# -- validation --------------------------------------------------------------------------------------------------------


BAD_AGENT_IDS = ["short", "a" * 65, "agent.with.dots", "agent%20space1", "agent!!!!!!", "agént-12345"]


async def test_bad_agent_ids_are_refused(client: httpx.AsyncClient, app: Any, clock: FakeClock) -> None:
    # One app for every case: an app per case made the module twice as slow.
    before = await snapshot(app)
    body = {"agent": agent_info(clock), "full": True, "sessions": [tracked("s-1", clock.now)]}
    for agent_id in BAD_AGENT_IDS:
        response = await client.post(f"/agents/{agent_id}/sync", json=body)
        assert response.status_code == 422, (agent_id, response.text)
        assert response.json()["detail"]
        response = await client.get(f"/agents/{agent_id}/commands")
        assert response.status_code == 422, (agent_id, response.text)
    assert await snapshot(app) == before


def _bad_bodies(now: datetime) -> dict[str, dict[str, Any]]:
    good = tracked("s-good", now)
    info = {"host": "web-1", "pid": 1, "started_at": iso(now)}

    def with_session(**change: Any) -> dict[str, Any]:
        return {"agent": info, "full": True, "sessions": [good, {**tracked("s-bad", now), **change}]}

    return {
        "bad status": with_session(status="Running!"),
        "status too long": with_session(status="a" * 33),
        "app name too long": with_session(app_name="x" * 201),
        "blank app name": with_session(app_name="   "),
        "control char in app name": with_session(app_name="app\x07"),
        "control char in task": with_session(current_task="step\x1b[2J"),
        "control char in user": with_session(user_id="bob\x00"),
        "bad session id": with_session(session_id="has space"),
        "session id too long": with_session(session_id="s" * 129),
        "missing started_at": {"agent": info, "sessions": [good, {"session_id": "s-bad", "app_name": "a"}]},
        "naive started_at": with_session(started_at="2026-01-01T11:00:00"),
        "bad end reason": {"agent": info, "sessions": [good], "ended": [ended("s-x", "crashed", now)]},
        "naive ended_at": {
            "agent": info,
            "sessions": [good],
            "ended": [{"session_id": "s-x", "reason": "closed", "ended_at": "2026-01-01T11:00:00"}],
        },
        "control char in host": {"agent": {**info, "host": "web\x01"}, "sessions": [good]},
        "negative pid": {"agent": {**info, "pid": -1}, "sessions": [good]},
        "naive task_started_at": with_session(status="running", task_started_at="2026-01-01T11:59:00"),
        "task start out of range": with_session(status="running", task_started_at="0001-01-01T00:00:00+05:00"),
        "task start far future": with_session(status="running", task_started_at="9999-12-31T23:59:59-10:00"),
        "start out of range": with_session(started_at="0001-01-01T00:00:00+05:00"),
        "end out of range": {
            "agent": info,
            "sessions": [good],
            "ended": [{"session_id": "s-x", "reason": "closed", "ended_at": "0001-01-01T00:00:00+01:00"}],
        },
        "agent start out of range": {"agent": {**info, "started_at": "0001-01-01T00:00:00+05:00"}, "sessions": [good]},
        "naive agent start": {"agent": {**info, "started_at": "2026-01-01T11:00:00"}, "sessions": [good]},
        "too many versions": {"agent": {**info, "versions": {f"p{i}": "1" for i in range(17)}}, "sessions": [good]},
        "sessions not a list": {"agent": info, "sessions": {"s-good": good}},
        "missing agent": {"sessions": [good]},
    }


async def test_invalid_sync_bodies_store_nothing(client: httpx.AsyncClient, app: Any, clock: FakeClock) -> None:
    await sync(client, clock, full=True, sessions_=[tracked("s-old", clock.now)])
    clock.advance(seconds=30)  # an accepted sync would move last_seen and last_heartbeat
    before = await snapshot(app)
    for case, body in _bad_bodies(clock.now).items():
        response = await client.post(f"/agents/{AGENT}/sync", json=body)
        assert response.status_code == 422, (case, response.status_code, response.text)
        assert response.json()["detail"], case
        assert await snapshot(app) == before, case


async def test_more_than_the_max_sessions_is_refused(client: httpx.AsyncClient, app: Any, clock: FakeClock) -> None:
    before = await snapshot(app)
    started = iso(clock.now)
    many = [{"session_id": f"s{i}", "app_name": "a", "started_at": started} for i in range(MAX_SYNC_SESSIONS + 1)]
    body = {"agent": agent_info(clock), "full": True, "sessions": many}
    response = await client.post(f"/agents/{AGENT}/sync", json=body)
    assert response.status_code == 422, response.text[:500]
    assert "sessions" in response.json()["detail"]

    ends = [{"session_id": f"s{i}", "reason": "closed", "ended_at": started} for i in range(MAX_SYNC_SESSIONS + 1)]
    response = await client.post(f"/agents/{AGENT}/sync", json={"agent": agent_info(clock), "ended": ends})
    assert response.status_code == 422, response.text[:500]
    assert await snapshot(app) == before


def _full_sync_body(clock: FakeClock, count: int) -> bytes:
    started = iso(clock.now)
    body = {
        "agent": agent_info(clock),
        "full": True,
        "sessions": [
            tracked(f"session-{i:06d}-{'x' * 40}", clock.now, app_name=f"app-{i % 7}", user_id=f"user-{i}")
            | {"started_at": started}
            for i in range(count)
        ],
    }
    return json.dumps(body).encode()


async def test_large_full_sync_is_accepted_above_the_general_body_limit(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    payload = _full_sync_body(clock, 2_000)
    settings: Settings = app.state.settings
    assert settings.max_body_bytes < len(payload) < settings.max_sync_body_bytes
    response = await client.post(f"/agents/{AGENT}/sync", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    listed = (await client.get("/sessions")).json()
    assert listed["total"] == 2_000
    assert {s["agent_id"] for s in listed["sessions"]} == {AGENT}
    [agent] = await list_agents(client)
    assert agent["session_count"] == 2_000
    assert agent["apps"] == [f"app-{i}" for i in range(7)]

    # the larger limit is the sync's only: the same size elsewhere is refused
    response = await client.post("/sessions", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_sync_over_its_body_limit_is_refused(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target.settings(max_sync_body_bytes=256 * 1024), clock) as (app, client):
        await sync(client, clock, full=True, sessions_=[tracked("s-old", clock.now)])
        before = await snapshot(app)
        payload = _full_sync_body(clock, 2_000)
        assert len(payload) > 256 * 1024
        response = await client.post(
            f"/agents/{AGENT}/sync", content=payload, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert "limit" in response.json()["detail"]

        # chunked (no Content-Length): refused while reading
        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(payload), 64 * 1024):
                yield payload[start : start + 64 * 1024]

        response = await client.post(
            f"/agents/{AGENT}/sync", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413, response.text
        assert await snapshot(app) == before


# -- commands: queue, cursor and long-poll -----------------------------------------------------------------------------


async def test_kill_queues_a_command_for_the_sessions_agent(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now), tracked("s-2", clock.now)])
    assert await fetch(client) == {"commands": [], "cursor": 0}

    await kill(client, "s-1", reason="too much memory", actor="ops@example")
    batch = await fetch(client, after=0)
    [cmd] = batch["commands"]
    assert cmd["id"] > 0
    assert (cmd["kind"], cmd["session_id"], cmd["reason"], cmd["actor"]) == (
        "kill",
        "s-1",
        "too much memory",
        "ops@example",
    )
    assert batch["cursor"] == cmd["id"]

    # the cursor passed back: nothing new, and the cursor stays
    assert await fetch(client, after=batch["cursor"]) == {"commands": [], "cursor": batch["cursor"]}

    await kill(client, "s-2")
    newer = await fetch(client, after=batch["cursor"])
    [cmd2] = newer["commands"]
    assert (cmd2["session_id"], cmd2["reason"], cmd2["actor"]) == ("s-2", None, "ops")
    assert newer["cursor"] == cmd2["id"] > batch["cursor"]
    # from the start, both in order
    assert [c["session_id"] for c in (await fetch(client, after=0))["commands"]] == ["s-1", "s-2"]

    rows = await command_rows(app)
    assert [(r["agent_id"], r["session_id"], r["kind"]) for r in rows] == [
        (AGENT, "s-1", "kill"),
        (AGENT, "s-2", "kill"),
    ]
    assert all(r["created_at"] == clock.now for r in rows)


async def test_kill_all_queues_one_command_per_agent_session(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    now = clock.now
    await sync(client, clock, full=True, sessions_=[tracked("a-1", now, "shop"), tracked("a-2", now, "shop")])
    await sync(
        client, clock, OTHER_AGENT, full=True, sessions_=[tracked("b-1", now, "shop"), tracked("b-2", now, "other")]
    )
    prototype = (await client.post("/sessions", json={"app_name": "shop"})).json()["session_id"]

    response = await client.post("/apps/shop/kill-all", json={"reason": "deploy"}, headers={ACTOR_HEADER: "ci"})
    assert response.json() == {"killed_count": 4}

    mine = (await fetch(client, AGENT))["commands"]
    theirs = (await fetch(client, OTHER_AGENT))["commands"]
    assert sorted(c["session_id"] for c in mine) == ["a-1", "a-2"]
    assert [c["session_id"] for c in theirs] == ["b-1"]
    assert {(c["kind"], c["reason"], c["actor"]) for c in mine + theirs} == {("kill", "deploy", "ci")}
    # no row for the prototype-style session, which learns it by heartbeat
    assert prototype not in {r["session_id"] for r in await command_rows(app)}
    assert len(await command_rows(app)) == 3
    response = await client.post(f"/sessions/{prototype}/heartbeat")
    assert response.json() == {"kill_requested": True}


async def test_prototype_sessions_get_no_command_rows(client: httpx.AsyncClient, app: Any) -> None:
    session_id = (await client.post("/sessions", json={"app_name": "legacy"})).json()["session_id"]
    other = (await client.post("/sessions", json={"app_name": "legacy"})).json()["session_id"]
    response = await client.post(f"/sessions/{session_id}/kill", json={"reason": "bye"})
    assert response.status_code == 200
    assert await command_rows(app) == []
    assert (await client.post(f"/sessions/{session_id}/heartbeat")).json() == {"kill_requested": True}
    assert (await client.post(f"/sessions/{other}/heartbeat")).json() == {"kill_requested": False}


async def test_long_poll_returns_as_soon_as_a_kill_is_queued(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now)])
    await sync(client, clock, OTHER_AGENT, full=True, sessions_=[tracked("b-1", clock.now)])
    cursor = (await fetch(client))["cursor"]

    started = time.monotonic()
    poll = asyncio.create_task(client.get(f"/agents/{AGENT}/commands", params={"after": cursor, "wait": 5}))
    other_poll = asyncio.create_task(client.get(f"/agents/{OTHER_AGENT}/commands", params={"wait": 0.5}))
    await wait_for_waiters(app, 2)
    assert not poll.done()

    await kill(client, "s-1", reason="now")
    response = await asyncio.wait_for(poll, timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    body = response.json()
    assert [(c["kind"], c["session_id"], c["reason"]) for c in body["commands"]] == [("kill", "s-1", "now")]
    assert body["cursor"] == body["commands"][0]["id"]
    assert elapsed < 2.0, f"long-poll answered after {elapsed:.2f} s of a 5 s wait"

    # the other agent's long-poll was not handed this kill
    assert (await asyncio.wait_for(other_poll, timeout=10)).json()["commands"] == []
    assert app.state.hub.waiting == 0


async def test_long_poll_with_nothing_queued_returns_empty_after_the_wait(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now)])
    started = time.monotonic()
    body = await fetch(client, wait=0.3)
    elapsed = time.monotonic() - started
    assert body == {"commands": [], "cursor": 0}
    assert 0.25 <= elapsed < 2.0, elapsed
    assert app.state.hub.waiting == 0


async def test_long_poll_is_not_woken_by_another_agents_kill(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now)])
    await sync(client, clock, OTHER_AGENT, full=True, sessions_=[tracked("b-1", clock.now)])
    started = time.monotonic()
    poll = asyncio.create_task(client.get(f"/agents/{AGENT}/commands", params={"wait": 0.5}))
    await wait_for_waiters(app, 1)
    await kill(client, "b-1")
    response = await asyncio.wait_for(poll, timeout=10)
    assert response.json()["commands"] == []
    assert time.monotonic() - started >= 0.45


async def test_cursor_beyond_the_newest_command_is_reset(client: httpx.AsyncClient, app: Any, clock: FakeClock) -> None:
    # an empty queue: any cursor starts over from 0
    assert await fetch(client, after=500) == {"commands": [], "cursor": 0}

    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now), tracked("s-2", clock.now)])
    await kill(client, "s-1")
    newest = max(r["id"] for r in await command_rows(app))
    # the agent's cursor comes from a database since recreated: reset to the newest id
    assert await fetch(client, after=newest + 1000) == {"commands": [], "cursor": newest}

    # from the reset cursor, the next kill is delivered
    await kill(client, "s-2")
    [cmd] = (await fetch(client, after=newest))["commands"]
    assert cmd["session_id"] == "s-2"


async def test_long_poll_with_a_stale_cursor_still_gets_the_next_kill(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    """A long-poll opened with a cursor from a recreated database must not sleep through a new kill.

    The reset counts the commands already there as seen, and a kill that commits while the long-poll
    reads the queue for the first time may be one of them (the next sync's stored intent carries it):
    so a second kill follows if the first one is not answered within 0.5 s. Without the reset holding
    for the rest of the long-poll, neither is answered before the 5 s wait runs out.
    """
    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now), tracked("s-2", clock.now)])
    started = time.monotonic()
    poll = asyncio.create_task(client.get(f"/agents/{AGENT}/commands", params={"after": 10_000, "wait": 5}))
    await wait_for_waiters(app, 1)
    await kill(client, "s-1", reason="now")
    done, _ = await asyncio.wait({poll}, timeout=0.5)
    if not done:
        await kill(client, "s-2", reason="now")
    response = await asyncio.wait_for(poll, timeout=10)
    elapsed = time.monotonic() - started
    body = response.json()
    assert [c["session_id"] for c in body["commands"]] in (["s-1"], ["s-2"])
    assert body["cursor"] == body["commands"][0]["id"]
    assert elapsed < 2.0, f"long-poll answered after {elapsed:.2f} s of a 5 s wait"


@pytest.mark.parametrize("params", [{"after": -1}, {"wait": -1}, {"wait": 61}, {"after": "x"}, {"wait": "nan"}])
async def test_commands_rejects_bad_parameters(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await client.get(f"/agents/{AGENT}/commands", params=params)
    assert response.status_code == 422, response.text


# -- auth --------------------------------------------------------------------------------------------------------------


async def test_client_token_guards_sync_and_commands(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target.settings(client_token=CLIENT), clock) as (app, client):
        before = await snapshot(app)
        body = {"agent": agent_info(clock), "full": True, "sessions": [tracked("s-1", clock.now)]}
        for headers in ({}, {"Authorization": "Bearer wrong-secret-1a2b3c4d5e6f"}):
            response = await client.post(f"/agents/{AGENT}/sync", json=body, headers=headers)
            assert response.status_code == 401, response.text
            response = await client.get(f"/agents/{AGENT}/commands", headers=headers)
            assert response.status_code == 401, response.text
        assert await snapshot(app) == before

        auth = {"Authorization": f"Bearer {CLIENT}"}
        answer = await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now)], headers=auth)
        assert answer["resync"] is False
        response = await client.get(f"/agents/{AGENT}/commands", headers=auth)
        assert response.status_code == 200
        assert response.json() == {"commands": [], "cursor": 0}
        # no admin token configured: the agents list is open
        assert [a["agent_id"] for a in await list_agents(client)] == [AGENT]


async def test_admin_token_guards_the_agents_list(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target.settings(admin_token=ADMIN, client_token=CLIENT), clock) as (_, client):
        await sync(client, clock, full=True, headers={"Authorization": f"Bearer {CLIENT}"})
        assert (await client.get("/agents")).status_code == 401
        assert (await client.get("/agents", headers={"Authorization": f"Bearer {CLIENT}"})).status_code == 403
        response = await client.get("/agents", headers={"Authorization": f"Bearer {ADMIN}"})
        assert response.status_code == 200
        assert [a["agent_id"] for a in response.json()["agents"]] == [AGENT]
        # the admin token also works for the agent's own calls
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert (await client.get(f"/agents/{AGENT}/commands", headers=admin)).status_code == 200


# -- GET /agents -------------------------------------------------------------------------------------------------------


async def test_agents_list_shows_process_facts_and_live_sessions(client: httpx.AsyncClient, clock: FakeClock) -> None:
    t0 = clock.now
    info = agent_info(clock, host="web-1", pid=100, command="panel serve a.py b.py", cpu_percent=55.5, rss_bytes=2**33)
    await sync(
        client,
        clock,
        info=info,
        full=True,
        sessions_=[tracked("a-1", t0, "reports"), tracked("a-2", t0, "reports"), tracked("a-3", t0, "pool")],
    )
    await sync(client, clock, ended_=[ended("a-3", "closed", t0)], info=info)  # ended sessions do not count
    other_info = agent_info(clock, host="web-0", pid=200, versions={}, cpu_percent=None, rss_bytes=None)
    await sync(client, clock, OTHER_AGENT, info=other_info, full=True)

    listed = await list_agents(client)
    assert [a["agent_id"] for a in listed] == [OTHER_AGENT, AGENT]  # by host, then pid
    idle, busy = listed
    assert (busy["host"], busy["pid"], busy["command"]) == ("web-1", 100, "panel serve a.py b.py")
    assert busy["versions"] == {"panel": "1.9.4", "bokeh": "3.9.2"}
    assert (busy["cpu_percent"], busy["rss_bytes"]) == (55.5, 2**33)
    assert (busy["session_count"], busy["apps"]) == (2, ["reports"])
    assert ts(busy["started_at"]) == t0 - timedelta(hours=1)
    assert ts(busy["last_seen"]) == t0
    assert (busy["exited_at"], busy["is_stale"]) == (None, False)
    assert (idle["session_count"], idle["apps"], idle["versions"]) == (0, [], {})
    assert (idle["cpu_percent"], idle["rss_bytes"]) == (None, None)

    # new facts with every sync
    clock.advance(seconds=100)
    await sync(client, clock, info={**info, "cpu_percent": 3.0, "rss_bytes": 1024})
    [_, busy] = await list_agents(client)
    assert (busy["cpu_percent"], busy["rss_bytes"]) == (3.0, 1024)
    assert ts(busy["last_seen"]) == clock.now

    # stale after stale_after_s (120 s) without a sync
    clock.advance(seconds=30)  # the other agent: 130 s silent; this one: 30 s
    stale = {a["agent_id"]: a["is_stale"] for a in await list_agents(client)}
    assert stale == {OTHER_AGENT: True, AGENT: False}
    clock.advance(seconds=91)
    assert all(a["is_stale"] for a in await list_agents(client))
    await sync(client, clock, OTHER_AGENT, info=other_info)
    stale = {a["agent_id"]: a["is_stale"] for a in await list_agents(client)}
    assert stale == {OTHER_AGENT: False, AGENT: True}


# -- reaper ------------------------------------------------------------------------------------------------------------


async def test_reaper_purges_old_commands_and_gone_agents(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    retention = timedelta(seconds=app.state.settings.history_retention_s)
    t0 = clock.now
    await sync(client, clock, full=True, sessions_=[tracked("s-1", t0), tracked("s-2", t0)])
    await sync(client, clock, OTHER_AGENT, full=True)
    await kill(client, "s-1")
    first = (await fetch(client))["cursor"]

    clock.now = t0 + timedelta(hours=23)
    await sync(client, clock)
    await kill(client, "s-2")
    clock.now = t0 + timedelta(days=1)
    await sync(client, clock)
    await reap(app)
    assert [r["session_id"] for r in await command_rows(app)] == ["s-1", "s-2"]  # a day old: still kept

    clock.advance(seconds=1)
    await sync(client, clock)
    await reap(app)
    assert [r["session_id"] for r in await command_rows(app)] == ["s-2"]
    # the agent's cursor keeps working after the purge
    assert [c["session_id"] for c in (await fetch(client, after=first))["commands"]] == ["s-2"]

    # OTHER_AGENT last synced at t0: purged once gone for longer than the history retention
    clock.now = t0 + retention
    await sync(client, clock)
    await reap(app)
    assert await agent_ids_stored(app) == {AGENT, OTHER_AGENT}  # exactly at the limit: kept
    clock.advance(seconds=1)
    await sync(client, clock)
    await reap(app)
    assert await agent_ids_stored(app) == {AGENT}
    assert await command_rows(app) == []
    # if it comes back, it is unknown and asked for a full sync
    assert (await sync(client, clock, OTHER_AGENT))["resync"] is True


async def test_reaper_without_agent_store_keeps_agents_and_commands(
    client: httpx.AsyncClient, app: Any, clock: FakeClock
) -> None:
    await sync(client, clock, full=True, sessions_=[tracked("s-1", clock.now)])
    await kill(client, "s-1")
    clock.advance(days=30)
    s: Settings = app.state.settings
    await reap_once(
        app.state.store,
        expire_after_s=s.expire_after_s,
        history_retention_s=s.history_retention_s,
        audit_retention_s=s.audit_retention_s,
    )
    assert len(await command_rows(app)) == 1
    assert await agent_ids_stored(app) == {AGENT}
