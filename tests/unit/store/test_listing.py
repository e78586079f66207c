"""Listings rendered by the database as JSON give, row by row, what the Python renderer gives.

``Store.list_sessions`` (rows rendered in Python by ``SessionRenderer``) is the reference; the JSON path
(``list_sessions_json``, ``get_session_json``) must match it field for field, value and type, on SQLite and
PostgreSQL: timestamps with and without microseconds, rounding ties of the computed seconds, negative spans
(a clock stepped back), agents' heartbeats, ended, killed, disconnected and running sessions, odd text.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from session_monitor.errors import SessionNotFound
from session_monitor.store import Database, SessionFilters, Store, reads, rowcache
from session_monitor.store.models import UTCDateTime, agents, sessions
from session_monitor.store.repository import Actor
from tests.conftest import DatabaseTarget, FakeClock

STALE_AFTER_S = 120.0
T0 = FakeClock().now
ADMIN = Actor("admin", "127.0.0.1")


@pytest.fixture
async def store(db_target: DatabaseTarget, clock: FakeClock) -> AsyncIterator[Store]:
    db = Database(db_target.url, schema=db_target.schema)
    await db.upgrade()
    yield Store(db, stale_after_s=STALE_AFTER_S, clock=clock)
    await db.close()


def _row(sid: str, **values: Any) -> dict[str, Any]:
    row: dict[str, Any] = {column.name: None for column in sessions.c}
    row.update(
        session_id=sid,
        app_name="app",
        start_time=T0 - timedelta(seconds=30),
        last_heartbeat=T0 - timedelta(seconds=1),
        status="idle",
        kill_requested=False,
        changed_at=T0 - timedelta(seconds=30),
        exempt=False,
    )
    row.update(values)
    return row


def _agent(agent_id: str, last_seen: datetime, exited_at: datetime | None = None) -> dict[str, Any]:
    return {
        "agent_id": agent_id,
        "host": "h",
        "pid": 1,
        "command": "panel serve",
        "versions": {},
        "started_at": T0 - timedelta(hours=1),
        "last_seen": last_seen,
        "exited_at": exited_at,
    }


def _edge_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    us = timedelta(microseconds=1)
    whole = T0 - timedelta(seconds=90)  # no fraction: written without ".000000"
    rows = [
        _row("proto-whole", start_time=whole, last_heartbeat=whole, changed_at=whole),
        _row("proto-stale", last_heartbeat=T0 - timedelta(seconds=STALE_AFTER_S, microseconds=1)),
        _row("proto-at-threshold", last_heartbeat=T0 - timedelta(seconds=STALE_AFTER_S)),
        _row("tie-up", start_time=T0 - timedelta(seconds=1, microseconds=500)),
        _row("tie-0.0005", start_time=T0 - 500 * us),
        _row("tie-big", start_time=T0 - timedelta(days=3, seconds=7, microseconds=2500)),
        _row("future-start", start_time=T0 + 400 * us, last_heartbeat=T0 + 400 * us),
        _row("future-start-tie", start_time=T0 + timedelta(seconds=2, microseconds=500)),
        _row(
            "running",
            status="running",
            current_task='report "Q3" \\ <b>bold</b>\n\t\x01 é ☃ 😀',
            task_started_at=T0 - timedelta(seconds=12, microseconds=345_500),
        ),
        _row("running-no-start", status="running", current_task="t"),
        _row(
            "with-cost",
            agent_id="a1",
            cost={
                "loop_seconds_total": 12.345678,
                "loop_seconds_1m": 1e-06,
                "pool_thread_seconds": 0.0,
                "callbacks_total": 2**40,
                "slowest_callback": {"qualname": 'app.<locals>.on_click "é" 😀', "duration_s": 2.000123},
                "periodic_callbacks": 3,
                "doc_models": 87,
                "doc_data_bytes": 209_715_200,
                "threads_alive": 1,
                "pool_jobs": 0,
                "pool_cpu_seconds": None,
                "measured_at": "2026-01-01T12:00:00+00:00",
            },
        ),
        _row("running-future", status="running", task_started_at=T0 + timedelta(milliseconds=3)),
        _row(
            "agent-fresher",
            agent_id="a1",
            host="host-1",
            pid=4242,
            visibility="hidden",
            last_heartbeat=T0 - timedelta(seconds=500),
            last_interaction_at=T0 - timedelta(seconds=4, microseconds=1500),
        ),
        _row("agent-older", agent_id="a2", last_heartbeat=T0 - timedelta(seconds=3)),
        _row("agent-exited", agent_id="a3", last_heartbeat=T0 - timedelta(seconds=200)),
        _row("interaction-future", last_interaction_at=T0 + timedelta(seconds=5)),
        _row("interaction-now", last_interaction_at=T0),
        _row("disconnected", disconnected_at=T0 - timedelta(seconds=2), visibility="visible"),
        _row("exempt", exempt=True),
        _row(
            "kill-pending",
            kill_requested=True,
            kill_requested_at=T0 - timedelta(seconds=1),
            kill_requested_by="admin",
            kill_reason="stop ‘now’",
        ),
        _row(
            "ended-killed",
            kill_requested=True,
            kill_requested_at=T0 - timedelta(seconds=9),
            kill_requested_by="admin",
            ended_at=T0 - timedelta(seconds=8, microseconds=1500),
            end_reason="killed",
            ended_by="agent",
            agent_id="a1",
            status="running",
            task_started_at=T0 - timedelta(seconds=20),
            disconnected_at=T0 - timedelta(seconds=10),
            last_interaction_at=T0 - timedelta(seconds=15, microseconds=500),
        ),
        _row("ended-before-start", ended_at=T0 - timedelta(seconds=40), end_reason="closed", ended_by="agent"),
        _row(
            "ended-interaction-after",
            ended_at=T0 - timedelta(seconds=10),
            end_reason="expired",
            ended_by="reaper",
            last_interaction_at=T0 - timedelta(seconds=5),
        ),
        _row("no-user", user_id=None, app_name="app/with?odd#chars", host=None),
    ]
    # Random spans to the microsecond: every rounding case of the computed seconds, ties included.
    rng = random.Random(20261201)
    for i in range(300):
        start = T0 - timedelta(microseconds=rng.randrange(0, 10**10))
        if i % 3 == 0:
            start = start.replace(microsecond=(start.microsecond // 1000) * 1000 + 500)
        ended = start + timedelta(microseconds=rng.randrange(0, 10**8)) if i % 5 == 0 else None
        rows.append(
            _row(
                f"random-{i:03d}",
                start_time=start,
                last_heartbeat=start + timedelta(microseconds=rng.randrange(0, 10**9)),
                status="running" if i % 2 else "idle",
                task_started_at=start + timedelta(microseconds=rng.randrange(0, 10**6)) if i % 2 else None,
                last_interaction_at=start + timedelta(microseconds=rng.randrange(0, 10**9)) if i % 4 else None,
                ended_at=ended,
                end_reason="closed" if ended else None,
                agent_id=("a1", "a2", "a3", None)[i % 4],
            )
        )
    agent_rows = [
        _agent("a1", T0 - timedelta(seconds=2, microseconds=1)),
        _agent("a2", T0 - timedelta(seconds=400)),
        _agent("a3", T0 - timedelta(seconds=1), exited_at=T0 - timedelta(seconds=1)),
    ]
    return rows, agent_rows


async def _seed(store: Store) -> list[str]:
    rows, agent_rows = _edge_rows()

    def op(conn: sa.Connection) -> None:
        conn.execute(agents.insert(), agent_rows)
        conn.execute(sessions.insert(), rows)

    await store.db.write(op)
    return [r["session_id"] for r in rows]


async def _document(store: Store, filters: SessionFilters, **kwargs: Any) -> dict[str, Any]:
    listing = await store.list_sessions_json(filters, **kwargs)
    body = listing.document({"cursor": T0})
    parts = body if isinstance(body, tuple) else [chunk async for chunk in body]
    result: dict[str, Any] = orjson.loads(b"".join(parts))
    return result


def _reference(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = orjson.loads(orjson.dumps(rows))
    return result


def _assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert [r["session_id"] for r in got] == [r["session_id"] for r in want], [
        (g["session_id"], w["session_id"]) for g, w in zip(got, want, strict=False) if g != w
    ][:3]
    for g, w in zip(got, want, strict=True):
        assert list(g) == list(w), g["session_id"]
        diff = {k: (g[k], w[k]) for k in w if g[k] != w[k] or type(g[k]) is not type(w[k])}
        assert not diff, (g["session_id"], diff)


@pytest.mark.parametrize("shift_s", [0.0, 0.0005, 61.25, 400.0])
async def test_json_listing_matches_the_python_renderer(store: Store, clock: FakeClock, shift_s: float) -> None:
    await _seed(store)
    clock.advance(seconds=shift_s)
    for live in (True, False):
        want, total = await store.list_sessions(SessionFilters(), live=live)
        doc = await _document(store, SessionFilters(), live=live)
        _assert_same(doc["sessions"], _reference(want))
        assert doc["total"] == total == len(want)
        assert doc["cursor"] == orjson.loads(orjson.dumps(T0))


async def test_json_listing_streams_in_chunks(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    await _seed(store)
    want, _ = await store.list_sessions(SessionFilters())
    for chunk_rows in (1, 7, len(want), len(want) + 1):
        monkeypatch.setattr(reads, "LIST_CHUNK_ROWS", chunk_rows)
        listing = await store.list_sessions_json(SessionFilters())
        body = listing.document({})
        listing.close()
        assert isinstance(body, tuple) == (chunk_rows >= len(want))
        doc = await _document(store, SessionFilters())
        _assert_same(doc["sessions"], _reference(want))
        assert doc["total"] == len(want)


async def test_json_pages_and_filters_match(store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    await _seed(store)
    monkeypatch.setattr(reads, "LIST_CHUNK_ROWS", 5)
    cases: list[tuple[SessionFilters, dict[str, Any]]] = [
        (SessionFilters(state="stale"), {}),
        (SessionFilters(state="running"), {"limit": 9, "offset": 3}),
        (SessionFilters(state="disconnected"), {}),
        (SessionFilters(search="REPORT"), {}),
        (SessionFilters(app="app"), {"limit": 50, "offset": 40}),
        (SessionFilters(), {"offset": 10_000}),
    ]
    for filters, page in cases:
        want, total = await store.list_sessions(filters, **page)
        doc = await _document(store, filters, **page)
        _assert_same(doc["sessions"], _reference(want))
        assert doc["total"] == total


async def test_one_session_as_json_matches(store: Store) -> None:
    ids = await _seed(store)
    for sid in ids[:40]:
        want = _reference([await store.get_session(sid)])
        _assert_same([orjson.loads(await store.get_session_json(sid))], want)
    with pytest.raises(SessionNotFound):
        await store.get_session_json("nope")


async def test_get_sessions_streams_a_long_listing(client: Any, app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store: Store = app.state.store
    for i in range(7):
        assert (await client.post("/sessions", json={"app_name": f"app-{i}", "user_id": "u"})).status_code == 200
    want, _ = await store.list_sessions(SessionFilters())
    for chunk_rows, streamed in ((3, True), (7, False), (50, False)):
        monkeypatch.setattr(reads, "LIST_CHUNK_ROWS", chunk_rows)
        r = await client.get("/sessions")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert ("content-length" not in r.headers) == streamed
        doc = r.json()
        _assert_same(doc["sessions"], _reference(want))
        assert doc["total"] == 7 and set(doc) == {"sessions", "total", "cursor"}
    one = await client.get(f"/sessions/{want[0]['session_id']}")
    _assert_same([one.json()], _reference(want[:1]))


async def _listed(store: Store, filters: SessionFilters | None = None) -> list[dict[str, Any]]:
    doc = await _document(store, filters or SessionFilters())
    rows: list[dict[str, Any]] = doc["sessions"]
    return rows


async def test_cached_rows_match_the_python_renderer_as_time_moves(store: Store, clock: FakeClock) -> None:
    await _seed(store)
    await _listed(store)  # fills the cache (the seeded rows changed 30 s ago)
    await _document(store, SessionFilters(), live=False)
    assert len(store.row_cache) == len(_edge_rows()[0])
    for shift_s in (0.0005, 61.25, 400.0):
        clock.advance(seconds=shift_s)
        hits = store.row_cache.hits
        for live in (True, False):
            want, _ = await store.list_sessions(SessionFilters(), live=live)
            doc = await _document(store, SessionFilters(), live=live)
            _assert_same(doc["sessions"], _reference(want))
        assert store.row_cache.hits - hits == len(store.row_cache)


async def test_a_row_changed_by_another_replica_is_served_fresh(
    store: Store, db_target: DatabaseTarget, clock: FakeClock
) -> None:
    await _seed(store)
    await _listed(store)
    other_db = Database(db_target.url, schema=db_target.schema)
    other = Store(other_db, stale_after_s=STALE_AFTER_S, clock=lambda: clock.now + timedelta(seconds=5))
    try:
        await other.update_status("proto-whole", "running", "another replica's task")
        await other.request_kill("kill-pending", ADMIN, "again")
        await other.end_session("disconnected", "closed", ADMIN)
    finally:
        await other_db.close()
    clock.advance(seconds=1)
    want, _ = await store.list_sessions(SessionFilters())
    got = await _listed(store)
    _assert_same(got, _reference(want))
    shown = {r["session_id"]: r for r in got}
    assert shown["proto-whole"]["current_task"] == "another replica's task"
    assert shown["kill-pending"]["kill_reason"] == "again"
    assert "disconnected" not in shown


async def test_a_row_written_at_the_listings_own_time_is_not_cached(store: Store) -> None:
    await store.create_session("app", "u", session_id="frozen")  # changed_at is the frozen clock's now
    [row] = await _listed(store)
    assert len(store.row_cache) == 0
    await store.update_status(row["session_id"], "running", "t")  # the same changed_at
    [again] = await _listed(store)
    assert (again["status"], again["current_task"]) == ("running", "t")


async def test_rows_no_listing_saw_lately_are_evicted(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    await _seed(store)
    await _listed(store, SessionFilters(app="app"))
    apps = len(store.row_cache)
    assert apps > 0
    monkeypatch.setattr(rowcache, "IDLE_EVICT_S", 0.0)
    odd = await _listed(store, SessionFilters(app="app/with?odd#chars"))
    assert len(odd) == 1 and len(store.row_cache) == 1


async def test_postgresql_epoch_microseconds_are_exact_until_2106(pg_database: str) -> None:
    """The listing's PostgreSQL keys (``rowcache.epoch_us``, a double) give every timestamp's exact microsecond."""
    rng = random.Random(2106)
    epoch = datetime(1970, 1, 1, tzinfo=T0.tzinfo)
    last = int((rowcache.EXACT_UNTIL - epoch) / timedelta(microseconds=1)) - 1
    micros = [0, 1, 999_999, 10**15 + 500_000, last, last - 1, *(rng.randrange(0, last) for _ in range(20_000))]
    micros += [(m // 1_000_000) * 1_000_000 + frac for m in micros[:200] for frac in (0, 1, 499_999, 500_000, 999_999)]
    column = sa.column("at", UTCDateTime())
    values = sa.values(column, name="v").data([(epoch + timedelta(microseconds=m),) for m in micros])
    query = sa.select(rowcache.epoch_us(values.c.at))
    db = Database(pg_database)
    try:
        got = await db.read(lambda conn: [int(us) for (us,) in conn.execute(query)])
    finally:
        await db.close()
    assert got == micros
