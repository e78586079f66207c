"""The dashboard's session feed against a real server app: one full listing, then only changes, merged."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from session_monitor.dashboard.client import ApiClient, SessionFeed
from session_monitor.store.changes import CURSOR_OVERLAP
from tests.conftest import FakeClock
from tests.integration.test_agent_protocol import ended, sync, tracked


@pytest.fixture
async def feed(app: object) -> AsyncIterator[SessionFeed]:
    api = ApiClient("http://127.0.0.1", transport=httpx.ASGITransport(app=app))  # type: ignore[arg-type]
    yield SessionFeed(api, max_age_s=0.0, max_load=1.0, full_reload_s=3600.0)
    await api.aclose()


async def listed(feed: SessionFeed) -> dict[str, str]:
    fetched = await feed.get()
    return {s["session_id"]: s["state"] for s in fetched.data["sessions"]}


async def test_feed_merges_changes_and_drops_ended_sessions(
    feed: SessionFeed, client: httpx.AsyncClient, clock: FakeClock
) -> None:
    t0 = clock.now
    await sync(client, clock, sessions_=[tracked(f"s-{i}", t0) for i in range(5)])
    assert await listed(feed) == {f"s-{i}": "idle" for i in range(5)}
    assert (feed.full_fetches, feed.delta_fetches) == (1, 0)

    clock.advance(seconds=CURSOR_OVERLAP.total_seconds() + 1)
    await listed(feed)  # overlap rows come again; the next cursor lies after them
    quiet = await feed.get()
    assert quiet.nbytes < 200, quiet.nbytes  # nothing changed: no session rows on the wire
    assert len(quiet.data["sessions"]) == 5

    await sync(client, clock, sessions_=[tracked("s-1", t0, status="running", current_task="Export")])
    await sync(client, clock, sessions_=[tracked("s-new", clock.now)], ended_=[ended("s-2", "closed", clock.now)])
    assert (await client.post("/sessions/s-3/kill")).status_code == 200
    now = await listed(feed)
    assert now == {"s-0": "idle", "s-1": "running", "s-3": "idle", "s-4": "idle", "s-new": "idle"}
    killed = [s for s in (await feed.get()).data["sessions"] if s["session_id"] == "s-3"]
    assert killed[0]["kill_requested"] is True
    assert feed.full_fetches == 1 and feed.delta_fetches >= 3

    # The agent's heartbeat reaches the rows through ``agent_last_seen``, not by repeating them.
    clock.advance(seconds=30)
    await sync(client, clock)
    fetched = await feed.get()
    assert set(fetched.data["agent_last_seen"]) == {"agent-0000aaaa"}


async def test_feed_starts_over_when_its_count_keeps_disagreeing(
    feed: SessionFeed, client: httpx.AsyncClient, clock: FakeClock, app: object
) -> None:
    await sync(client, clock, sessions_=[tracked("a", clock.now), tracked("b", clock.now)])
    assert set(await listed(feed)) == {"a", "b"}
    clock.advance(seconds=CURSOR_OVERLAP.total_seconds() + 1)
    await listed(feed)
    # A change the cursor cannot see (written with an old stamp, like a database swapped under the server).
    store = app.state.store  # type: ignore[attr-defined]
    saved = store.clock
    store.clock = lambda: clock.now - CURSOR_OVERLAP * 10
    try:
        await sync(client, clock, sessions_=[tracked("hidden", clock.now)])
    finally:
        store.clock = saved
    assert set(await listed(feed)) == {"a", "b"}  # disagreement once: may be a session between list and count
    assert set(await listed(feed)) == {"a", "b"}  # twice: the cursor is dropped
    assert set(await listed(feed)) == {"a", "b", "hidden"}
    assert feed.full_fetches == 2
