"""The reaper: silent sessions end as ``expired``, old history and audit entries go. Time is a FakeClock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from session_monitor.server import create_app
from session_monitor.server.reaper import ReapResult, reap_once, run_reaper
from session_monitor.store import SessionFilters, Store
from session_monitor.store.repository import Actor
from tests.conftest import DatabaseTarget, FakeClock

EXPIRE_S = 600.0
DAY_S = 24 * 3600.0
ADMIN = Actor("admin", "127.0.0.1")


@pytest.fixture
def store(app: FastAPI) -> Store:
    result: Store = app.state.store
    return result


async def reap(store: Store, *, history_s: float = 7 * DAY_S, audit_s: float = 90 * DAY_S) -> ReapResult:
    return await reap_once(store, expire_after_s=EXPIRE_S, history_retention_s=history_s, audit_retention_s=audit_s)


async def new_session(store: Store, session_id: str, app_name: str = "app") -> str:
    return await store.create_session(app_name, None, session_id=session_id)


async def eventually(predicate: Callable[[], Awaitable[Any]], timeout_s: float = 10.0) -> Any:
    """Poll an async predicate until it is truthy (the async twin of tests.helpers.wait_until)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await predicate()
        if last:
            return last
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {timeout_s} s (last value: {last!r})")


# -- reap_once: expiry ------------------------------------------------------------------------------


async def test_silent_session_expires_and_beating_one_stays(store: Store, clock: FakeClock) -> None:
    await new_session(store, "silent")
    await new_session(store, "beating")
    clock.advance(seconds=500)
    assert await store.heartbeat("beating") is False
    clock.advance(seconds=101)  # silent: 601 s, beating: 101 s

    assert await reap(store) == ReapResult(expired=1, history_purged=0, audit_purged=0)

    silent = await store.get_session("silent")
    assert silent["state"] == "ended"
    assert (silent["end_reason"], silent["ended_by"]) == ("expired", "reaper")
    assert silent["ended_at"] == clock.now
    assert silent["duration_seconds"] == 601.0
    beating = await store.get_session("beating")
    assert beating["state"] == "idle" and beating["ended_at"] is None

    rows, total = await store.list_sessions(SessionFilters())
    assert [r["session_id"] for r in rows] == ["beating"] and total == 1
    ended, total = await store.list_sessions(SessionFilters(end_reason="expired"), live=False)
    assert [r["session_id"] for r in ended] == ["silent"] and total == 1
    # the reaper's own ends are not admin actions: no audit entry
    assert await store.list_audit(limit=10) == ([], 0)

    # nothing more to do on the next pass
    assert await reap(store) == ReapResult(0, 0, 0)
    assert (await store.get_session("silent"))["ended_at"] == ended[0]["ended_at"]


async def test_expiry_threshold_is_strict(store: Store, clock: FakeClock) -> None:
    await new_session(store, "s")
    clock.advance(seconds=EXPIRE_S)
    assert (await reap(store)).expired == 0
    assert (await store.get_session("s"))["ended_at"] is None
    clock.advance(microseconds=1000)
    assert (await reap(store)).expired == 1
    assert (await store.get_session("s"))["end_reason"] == "expired"


async def test_expired_session_refuses_heartbeat_and_status(
    client: httpx.AsyncClient, store: Store, clock: FakeClock
) -> None:
    session_id = (await client.post("/sessions", json={"app_name": "app"})).json()["session_id"]
    await client.put(f"/sessions/{session_id}/status", json={"status": "running", "current_task": "long job"})
    clock.advance(seconds=EXPIRE_S + 1)
    assert (await reap(store)).expired == 1

    response = await client.post(f"/sessions/{session_id}/heartbeat")
    assert response.status_code == 404
    assert "expired" in response.json()["detail"]
    assert (await client.put(f"/sessions/{session_id}/status", json={"status": "idle"})).status_code == 404
    row = (await client.get(f"/sessions/{session_id}")).json()
    assert (row["state"], row["end_reason"], row["ended_by"]) == ("ended", "expired", "reaper")
    assert row["task_seconds"] is None  # an ended session runs nothing


async def test_kill_requested_session_that_goes_silent_still_expires(store: Store, clock: FakeClock) -> None:
    await new_session(store, "k")
    await store.request_kill("k", ADMIN, "stop")
    clock.advance(seconds=EXPIRE_S + 1)
    assert (await reap(store)).expired == 1
    row = await store.get_session("k")
    assert (row["end_reason"], row["kill_requested"]) == ("expired", True)


# -- stale: shown, not ended --------------------------------------------------------------------------


async def test_stale_is_shown_but_stays_live(store: Store, clock: FakeClock) -> None:
    await new_session(store, "quiet")
    await new_session(store, "fresh")
    clock.advance(seconds=100)
    await store.heartbeat("fresh")
    clock.advance(seconds=21)  # quiet: 121 s > 120 s stale threshold

    assert await reap(store) == ReapResult(0, 0, 0)
    quiet = await store.get_session("quiet")
    assert quiet["is_stale"] is True and quiet["state"] == "stale"
    assert quiet["ended_at"] is None and quiet["end_reason"] is None
    fresh = await store.get_session("fresh")
    assert fresh["is_stale"] is False and fresh["state"] == "idle"

    stale, total = await store.list_sessions(SessionFilters(state="stale"))
    assert [r["session_id"] for r in stale] == ["quiet"] and total == 1
    assert sorted(await store.count_live()) == [("app", "idle", 1), ("app", "stale", 1)]

    # a heartbeat brings it back
    assert await store.heartbeat("quiet") is False
    quiet = await store.get_session("quiet")
    assert quiet["is_stale"] is False and quiet["state"] == "idle"

    # silence long enough and the reaper ends it
    clock.advance(seconds=EXPIRE_S + 1)
    assert (await reap(store)).expired == 2


# -- reap_once: retention ---------------------------------------------------------------------------


async def test_history_and_audit_are_purged_after_retention(store: Store, clock: FakeClock) -> None:
    history_s, audit_s = 3600.0, 7200.0
    t0 = clock.now
    for name in ("old", "newer", "live"):
        await new_session(store, name)
    await store.request_kill("old", ADMIN, None)  # audit entry at t0
    await store.end_session("old", "closed", ADMIN)  # history ended at t0

    clock.advance(minutes=30)
    await store.request_kill_app("nobody", ADMIN, None)  # audit entry at t0 + 30 min
    await store.end_session("newer", "closed", ADMIN)  # history ended at t0 + 30 min

    clock.advance(minutes=30, seconds=1)  # old history: 60 min 1 s
    await store.heartbeat("live")
    assert await reap(store, history_s=history_s, audit_s=audit_s) == ReapResult(0, 1, 0)
    ended, _ = await store.list_sessions(SessionFilters(), live=False)
    assert [r["session_id"] for r in ended] == ["newer"]
    entries, total = await store.list_audit(limit=10)
    assert total == 2
    with pytest.raises(Exception, match="not found"):
        await store.get_session("old")

    clock.advance(minutes=60)  # old audit: 120 min 1 s, newer history: 90 min 1 s, newer audit: 90 min 1 s
    await store.heartbeat("live")
    assert await reap(store, history_s=history_s, audit_s=audit_s) == ReapResult(0, 1, 1)
    assert await store.list_sessions(SessionFilters(), live=False) == ([], 0)
    entries, total = await store.list_audit(limit=10)
    assert total == 1
    assert [(e["action"], e["target"], e["at"]) for e in entries] == [
        ("kill_all", "nobody", t0 + timedelta(minutes=30))
    ]

    # a live session is never purged, however old it is
    rows, total = await store.list_sessions(SessionFilters())
    assert [r["session_id"] for r in rows] == ["live"] and total == 1
    assert rows[0]["duration_seconds"] == (clock.now - t0).total_seconds()


async def test_expired_sessions_become_history_then_go(store: Store, clock: FakeClock) -> None:
    await new_session(store, "gone")
    clock.advance(seconds=EXPIRE_S + 1)
    assert await reap(store, history_s=3600) == ReapResult(1, 0, 0)
    clock.advance(seconds=3600)
    assert await reap(store, history_s=3600) == ReapResult(0, 0, 0)  # exactly at retention: kept
    clock.advance(seconds=1)
    assert await reap(store, history_s=3600) == ReapResult(0, 1, 0)
    assert await store.list_sessions(SessionFilters(), live=False) == ([], 0)


# -- run_reaper -------------------------------------------------------------------------------------


def reaper_task(store: Store, stop: asyncio.Event, on_result: Callable[[ReapResult], None], interval_s: float):
    return asyncio.create_task(
        run_reaper(
            store,
            interval_s=interval_s,
            stop=stop,
            expire_after_s=EXPIRE_S,
            history_retention_s=7 * DAY_S,
            audit_retention_s=90 * DAY_S,
            on_result=on_result,
        )
    )


async def test_run_reaper_first_pass_is_immediate_and_stop_ends_it(store: Store, clock: FakeClock) -> None:
    await new_session(store, "silent")
    clock.advance(seconds=EXPIRE_S + 1)
    stop = asyncio.Event()
    results: list[ReapResult] = []
    passed = asyncio.Event()

    def on_result(result: ReapResult) -> None:
        results.append(result)
        passed.set()

    # an hour between passes: only the immediate first pass can happen in this test
    task = reaper_task(store, stop, on_result, interval_s=3600)
    await asyncio.wait_for(passed.wait(), timeout=10)
    assert results == [ReapResult(1, 0, 0)]
    assert (await store.get_session("silent"))["end_reason"] == "expired"
    assert not task.done()

    stop.set()
    await asyncio.wait_for(task, timeout=10)  # wakes from its hour-long wait at once
    assert task.result() is None
    assert results == [ReapResult(1, 0, 0)]


async def test_run_reaper_with_stop_already_set_does_nothing(store: Store, clock: FakeClock) -> None:
    await new_session(store, "silent")
    clock.advance(seconds=EXPIRE_S + 1)
    stop = asyncio.Event()
    stop.set()
    results: list[ReapResult] = []
    await asyncio.wait_for(reaper_task(store, stop, results.append, interval_s=3600), timeout=10)
    assert results == []
    assert (await store.get_session("silent"))["ended_at"] is None


async def test_run_reaper_repeats_and_survives_a_failing_pass(
    store: Store, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()
    results: list[ReapResult] = []
    enough = asyncio.Event()

    def on_result(result: ReapResult) -> None:
        results.append(result)
        if len(results) == 1:
            raise RuntimeError("boom in pass one")
        if len(results) >= 3:
            enough.set()

    caplog.set_level(logging.ERROR, logger="session_monitor.server.reaper")
    task = reaper_task(store, stop, on_result, interval_s=0.01)
    await asyncio.wait_for(enough.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert len(results) >= 3
    failures = [r for r in caplog.records if "reaper pass failed" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].exc_info is not None and "boom in pass one" in str(failures[0].exc_info[1])


async def test_server_runs_the_reaper_at_start(db_target: DatabaseTarget, clock: FakeClock) -> None:
    def metric(text: str, name: str, **labels: str) -> float | None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    first = create_app(db_target.settings(), clock=clock)
    async with (
        first.router.lifespan_context(first),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=first), base_url="http://127.0.0.1") as c,
    ):
        silent = (await c.post("/sessions", json={"app_name": "app"})).json()["session_id"]
    clock.advance(seconds=EXPIRE_S + 1)

    app = create_app(db_target.settings(run_reaper=True, reaper_interval_s=3600, expire_after_s=EXPIRE_S), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as c,
    ):

        async def ended() -> bool:
            return bool((await c.get(f"/sessions/{silent}")).json()["end_reason"] == "expired")

        await eventually(ended)
        row = (await c.get(f"/sessions/{silent}")).json()
        assert row["ended_by"] == "reaper"

        # The reaper counts what it ended once its write has committed: just after the row shows it.
        async def counted() -> bool:
            text = (await c.get("/metrics")).text
            return metric(text, "session_monitor_sessions_ended_total", reason="expired") == 1.0

        await eventually(counted)
