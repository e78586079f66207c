"""Lost agents (``server.lost``): a dropped long-poll plus no poll or sync for the grace ends the agent's sessions.

On SQLite and the real PostgreSQL. Database time is the app's ``FakeClock``; the watch's own (monotonic)
clock is a number the tests move. The real-process version (SIGKILL, restart, blip) is
``tests/integration/test_process_lost.py``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from session_monitor.protocol import SyncRequest
from session_monitor.server.lost import LossWatch
from session_monitor.store import Store
from session_monitor.store.agents import AgentStore
from tests.conftest import FakeClock

AGENT = "agent-lost-0001"
GRACE_S = 10.0


class Ticks:
    """The watch's monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def watch(ticks: Ticks) -> LossWatch:
    return LossWatch(lost_after_s=GRACE_S, warmup_s=0.0, clock=ticks)


@pytest.fixture
def store(app: FastAPI) -> Store:
    result: Store = app.state.store
    return result


def body(clock: FakeClock, session_ids: list[str], *, full: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "agent": {
            "host": "web-1",
            "pid": 4242,
            "command": "panel serve app.py",
            "versions": {},
            "started_at": (clock.now - timedelta(hours=1)).isoformat(),
        },
        "full": full,
        "sessions": [
            {
                "session_id": sid,
                "app_name": "app",
                "status": "running",
                "current_task": "crunching",
                "started_at": (clock.now - timedelta(minutes=5)).isoformat(),
            }
            for sid in session_ids
        ],
        **extra,
    }


async def agent_sync(client: httpx.AsyncClient, clock: FakeClock, session_ids: list[str], **kw: Any) -> Any:
    response = await client.post(f"/agents/{AGENT}/sync", json=body(clock, session_ids, **kw))
    assert response.status_code == 200, response.text
    return response.json()


async def session(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    response = await client.get(f"/sessions/{sid}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


IDS = ["s-1", "s-2", "s-3"]


async def test_a_dropped_agent_is_lost_after_the_grace(
    client: httpx.AsyncClient, clock: FakeClock, store: Store, watch: LossWatch, ticks: Ticks
) -> None:
    await agent_sync(client, clock, IDS)
    clock.advance(seconds=1)
    watch.dropped(AGENT)
    assert await watch.check(store) == []  # reads the baseline
    ticks.now += GRACE_S - 0.1
    clock.advance(seconds=GRACE_S - 0.1)
    assert await watch.check(store) == []
    assert [(await session(client, sid))["ended_at"] for sid in IDS] == [None] * 3
    ticks.now += 0.1
    clock.advance(seconds=0.1)
    lost = await watch.check(store)
    assert [(a.agent_id, a.host, a.pid, a.sessions_ended) for a in lost] == [(AGENT, "web-1", 4242, 3)]
    for sid in IDS:
        row = await session(client, sid)
        assert (row["end_reason"], row["ended_by"], row["state"]) == ("process_lost", "server", "ended"), row
    agents = (await client.get("/agents", params={"include_exited": "true"})).json()["agents"]
    assert [a["exited_at"] is not None for a in agents] == [True]
    assert watch.suspects == 0
    history = (await client.get("/history", params={"reason": "process_lost"})).json()
    assert history["total"] == 3


async def test_a_sync_on_any_replica_after_the_drop_clears_it(
    client: httpx.AsyncClient, clock: FakeClock, store: Store, watch: LossWatch, ticks: Ticks
) -> None:
    await agent_sync(client, clock, IDS)
    watch.dropped(AGENT)
    assert await watch.check(store) == []
    clock.advance(seconds=5)
    # The agent failed over: its sync lands on another replica, which shares only the database with this one.
    other_replica = AgentStore(store)
    await other_replica.sync(AGENT, SyncRequest.model_validate(body(clock, IDS, full=False)))
    ticks.now += GRACE_S + 1
    clock.advance(seconds=GRACE_S + 1)
    assert await watch.check(store) == []
    assert watch.suspects == 0
    assert [(await session(client, sid))["ended_at"] for sid in IDS] == [None] * 3


async def test_a_new_poll_or_a_sync_here_clears_it(
    client: httpx.AsyncClient, clock: FakeClock, store: Store, watch: LossWatch, ticks: Ticks
) -> None:
    await agent_sync(client, clock, IDS)
    watch.dropped(AGENT)
    await watch.check(store)
    watch.back(AGENT)  # what the commands route and the sync route do
    ticks.now += GRACE_S + 1
    assert await watch.check(store) == []
    assert [(await session(client, sid))["ended_at"] for sid in IDS] == [None] * 3


async def test_the_routes_report_polls_and_syncs_to_the_watch(
    app: FastAPI, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    watch: LossWatch = app.state.loss_watch
    await agent_sync(client, clock, IDS)
    watch.dropped(AGENT)
    await agent_sync(client, clock, [], full=False)
    assert watch.suspects == 0
    watch.dropped(AGENT)
    assert (await client.get(f"/agents/{AGENT}/commands", params={"wait": 0})).status_code == 200
    assert watch.suspects == 0


async def test_no_decision_in_the_first_sync_interval(
    client: httpx.AsyncClient, clock: FakeClock, store: Store, ticks: Ticks
) -> None:
    watch = LossWatch(lost_after_s=1.0, warmup_s=5.0, clock=ticks)
    await agent_sync(client, clock, IDS)
    watch.dropped(AGENT)
    await watch.check(store)
    ticks.now += 4.9
    assert await watch.check(store) == []
    ticks.now += 0.1
    assert [a.sessions_ended for a in await watch.check(store)] == [3]


async def test_an_agent_that_said_goodbye_is_not_lost(
    client: httpx.AsyncClient, clock: FakeClock, store: Store, watch: LossWatch, ticks: Ticks
) -> None:
    await agent_sync(client, clock, IDS)
    await agent_sync(client, clock, [], full=False, exiting=True)
    watch.dropped(AGENT)  # its long-poll goes with the process, after the last sync
    assert await watch.check(store) == []
    assert watch.suspects == 0
    assert {(await session(client, sid))["end_reason"] for sid in IDS} == {"process_exit"}


async def test_a_lost_agent_that_comes_back_is_asked_to_resync_and_revived(
    client: httpx.AsyncClient, clock: FakeClock, store: Store, watch: LossWatch, ticks: Ticks
) -> None:
    await agent_sync(client, clock, IDS)
    kill = await client.post("/sessions/s-3/kill", json={"reason": "too big"})
    assert kill.status_code == 200, kill.text
    watch.dropped(AGENT)
    await watch.check(store)
    ticks.now += GRACE_S
    clock.advance(seconds=GRACE_S)
    assert [a.sessions_ended for a in await watch.check(store)] == [3]
    assert (await session(client, "s-3"))["end_reason"] == "killed"  # a kill asked for stays a kill
    clock.advance(seconds=30)
    # Its usual incremental sync (it never knew): the server asks for everything, then revives what is listed.
    answer = await agent_sync(
        client,
        clock,
        [],
        full=False,
        ended=[{"session_id": "s-2", "reason": "closed", "ended_at": clock.now.isoformat()}],
    )
    assert answer["resync"] is True
    assert (await session(client, "s-2"))["end_reason"] == "closed"  # the agent's own account wins
    answer = await agent_sync(client, clock, ["s-1", "s-3"])
    assert answer["resync"] is False
    revived = await session(client, "s-1")
    assert (revived["ended_at"], revived["state"], revived["current_task"]) == (None, "running", "crunching")
    assert (await session(client, "s-3"))["end_reason"] == "killed"  # never revived
    assert (await agent_sync(client, clock, [], full=False))["resync"] is False
    agents = (await client.get("/agents")).json()["agents"]
    assert [(a["agent_id"], a["exited_at"]) for a in agents] == [(AGENT, None)]
