"""Loop health and stalls through the agent protocol, on SQLite and the real PostgreSQL: storage, ``GET /agents``,
``GET /stalls`` and its filters, ``/metrics``, bad input, the rate and the caps, and retention."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from session_monitor.protocol import LOOP_LAG_BUCKETS_S
from session_monitor.server import create_app
from session_monitor.server.reaper import reap_once
from tests.conftest import DatabaseTarget, FakeClock

AGENT = "agent-stall-aaaa"
OTHER = "agent-stall-bbbb"
ADMIN = "admin-secret-7f3a9c1e5b2d"


@contextlib.asynccontextmanager
async def serving(
    db_target: DatabaseTarget, clock: FakeClock, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    application = create_app(db_target.settings(**overrides), clock=clock)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield application, c


def loop_health(**extra: Any) -> dict[str, Any]:
    buckets = [0] * (len(LOOP_LAG_BUCKETS_S) + 1)
    buckets[0], buckets[7] = 48, 2  # 48 probes <= 1 ms, 2 between 0.25 and 0.5 s
    health = {
        "interval_s": 5.0,
        "probes": 50,
        "lag_p50_ms": 0.4,
        "lag_p99_ms": 310.0,
        "lag_max_ms": 420.0,
        "lag_sum_ms": 750.0,
        "lag_buckets": buckets,
        "busy": 0.37,
        "pool_size": 4,
        "pool_queue": 3,
        "pool_busy": 4,
        "stalls_dropped": 1,
    }
    health.update(extra)
    return health


def frame(
    function: str = "crunch", file: str = "/srv/app/report.py", line: int = 42, app: bool = True
) -> dict[str, Any]:
    return {"file": file, "line": line, "function": function, "code": "time.sleep(2)", "app": app}


def stall(
    clock: FakeClock, seq: int, *, final: bool = True, session: str | None = "s-blocker", **extra: Any
) -> dict[str, Any]:
    body = {
        "seq": seq,
        "started_at": (clock.now - timedelta(seconds=3)).isoformat(),
        "duration_s": 2.0 if final else 0.6,
        "final": final,
        "session_id": session,
        "function": "panel.reactive.Syncable._change_coroutine",
        "stack": [
            frame(),
            frame("on_click", line=50),
            frame("_run", "/venv/site-packages/tornado/ioloop.py", 9, False),
        ],
    }
    body.update(extra)
    return body


Body = dict[str, Any]


def sync_body(clock: FakeClock, *, stalls: list[Body] | None = None, host: str = "web-1", pid: int = 4242,
              loop: Body | None = None, sessions: list[Body] | None = None) -> Body:  # fmt: skip
    agent: dict[str, Any] = {"host": host, "pid": pid, "started_at": (clock.now - timedelta(hours=1)).isoformat()}
    if loop is not None:
        agent["loop"] = loop
    return {"agent": agent, "sessions": sessions or [], "stalls": stalls or []}


def session(sid: str, app: str, clock: FakeClock) -> dict[str, Any]:
    return {"session_id": sid, "app_name": app, "started_at": clock.now.isoformat()}


async def test_loop_health_on_agents_and_metrics(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target, clock) as (_, c):
        r = await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, loop=loop_health()))
        assert r.status_code == 200, r.text
        (agent,) = (await c.get("/agents")).json()["agents"]
        loop = agent["loop"]
        assert loop["lag_p99_ms"] == 310.0 and loop["lag_max_ms"] == 420.0 and loop["busy"] == 0.37
        assert (loop["pool_size"], loop["pool_queue"], loop["pool_busy"]) == (4, 3, 4)
        assert loop["stalls_dropped"] == 1 and loop["probes"] == 50
        assert "loop_lag_p99_ms" not in agent and "stall_window_at" not in agent
        await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, loop=loop_health()))
        text = (await c.get("/metrics")).text
        assert 'session_monitor_loop_lag_seconds_bucket{host="web-1",le="0.001",pid="4242"} 96.0' in text
        assert 'session_monitor_loop_lag_seconds_bucket{host="web-1",le="0.5",pid="4242"} 100.0' in text
        assert 'session_monitor_loop_lag_seconds_count{host="web-1",pid="4242"} 100.0' in text
        assert 'session_monitor_loop_lag_seconds_sum{host="web-1",pid="4242"} 1.5' in text
        assert 'session_monitor_loop_busy_ratio{host="web-1",pid="4242"} 0.37' in text
        assert 'session_monitor_pool_queue_depth{host="web-1",pid="4242"} 3.0' in text
        # An agent that sends no loop health (older client) has none.
        await c.post(f"/agents/{OTHER}/sync", json=sync_body(clock, host="web-2"))
        other = [a for a in (await c.get("/agents")).json()["agents"] if a["host"] == "web-2"]
        assert other[0]["loop"] is None


async def test_a_stall_is_stored_open_then_final_once(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target, clock) as (_, c):
        first = sync_body(
            clock, stalls=[stall(clock, 1, final=False)], sessions=[session("s-blocker", "reports", clock)]
        )
        r = await c.post(f"/agents/{AGENT}/sync", json=first)
        assert r.status_code == 200 and r.json()["stalls_refused"] == 0 and r.json()["stalls_error"] is None
        listed = (await c.get("/stalls")).json()
        assert listed["total"] == 1 and listed["dropped"] == 0
        (open_stall,) = listed["stalls"]
        assert (open_stall["final"], open_stall["duration_s"]) == (False, 0.6)
        assert open_stall["app_name"] == "reports" and open_stall["session_id"] == "s-blocker"
        assert (open_stall["host"], open_stall["pid"]) == ("web-1", 4242)
        assert open_stall["stack"][0]["function"] == "crunch" and open_stall["stack"][0]["line"] == 42
        clock.advance(seconds=2)
        r = await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, stalls=[stall(clock, 1, final=True)]))
        assert r.status_code == 200
        (final,) = (await c.get("/stalls")).json()["stalls"]
        assert (final["final"], final["duration_s"], final["id"]) == (True, 2.0, open_stall["id"])
        metrics = (await c.get("/metrics")).text
        assert 'session_monitor_loop_stalls_total{host="web-1",pid="4242"} 1.0' in metrics


async def test_stall_filters_and_paging(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target, clock) as (_, c):
        sessions = [session("s-a", "sales", clock), session("s-b", "reports", clock)]
        body = sync_body(
            clock, sessions=sessions, stalls=[stall(clock, 1, session="s-a"), stall(clock, 2, session="s-b")]
        )
        assert (await c.post(f"/agents/{AGENT}/sync", json=body)).status_code == 200
        clock.advance(minutes=10)
        later = sync_body(clock, host="web-2", stalls=[stall(clock, 1, session=None)])
        assert (await c.post(f"/agents/{OTHER}/sync", json=later)).status_code == 200

        async def seqs(**params: Any) -> list[tuple[str, int]]:
            r = await c.get("/stalls", params=params)
            assert r.status_code == 200, r.text
            return [(s["host"], s["seq"]) for s in r.json()["stalls"]]

        assert await seqs() == [("web-2", 1), ("web-1", 2), ("web-1", 1)]
        assert await seqs(app="sales") == [("web-1", 1)]
        assert await seqs(session="s-b") == [("web-1", 2)]
        assert await seqs(host="web-2") == [("web-2", 1)]
        assert await seqs(since=(clock.now - timedelta(minutes=5)).isoformat()) == [("web-2", 1)]
        assert await seqs(limit=1, offset=1) == [("web-1", 2)]
        assert (await c.get("/stalls", params={"limit": 1})).json()["total"] == 3
        assert (await c.get("/stalls", params={"since": "yesterday"})).status_code == 422
        assert (await c.get("/stalls", params={"session": "bad id!"})).status_code == 422


async def test_stalls_need_the_admin_token(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target, clock, admin_token=ADMIN) as (_, c):
        assert (await c.get("/stalls")).status_code == 401
        r = await c.get("/stalls", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 200 and r.json()["stalls"] == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"stack": [frame()] * 31}, "stack"),
        ({"stack": [frame(file="/x/" + "a" * 600)]}, "file"),
        ({"stack": [frame(function="f" * 201)]}, "function"),
        ({"stack": [frame(function="bad\x1b[31m")]}, "function"),
        ({"function": "x" * 201}, "function"),
        ({"duration_s": -1}, "duration_s"),
        ({"session_id": "<script>"}, "session_id"),
        ({"started_at": "2026-01-01T12:00:00"}, "started_at"),
    ],
)
async def test_bad_stalls_are_refused_with_a_clear_error(
    db_target: DatabaseTarget, clock: FakeClock, change: dict[str, Any], where: str
) -> None:
    async with serving(db_target, clock) as (_, c):
        r = await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, stalls=[stall(clock, 1, **change)]))
        assert r.status_code == 422
        assert "stalls.0" in r.json()["detail"] and where in r.json()["detail"]
        assert (await c.get("/stalls")).json()["total"] == 0


async def test_bad_loop_health_and_too_many_stalls_are_refused(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target, clock) as (_, c):
        r = await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, loop=loop_health(lag_buckets=[1, 2, 3])))
        assert r.status_code == 422 and "lag_buckets" in r.json()["detail"]
        r = await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, loop=loop_health(busy=1.5)))
        assert r.status_code == 422 and "busy" in r.json()["detail"]
        many = [stall(clock, i) for i in range(101)]
        r = await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, stalls=many))
        assert r.status_code == 422 and "stalls" in r.json()["detail"]


async def test_an_agent_over_the_rate_gets_stalls_refused_and_its_sync_stands(
    db_target: DatabaseTarget, clock: FakeClock
) -> None:
    async with serving(db_target, clock, max_stalls_per_minute=5) as (_, c):
        body = sync_body(clock, stalls=[stall(clock, i) for i in range(1, 9)], sessions=[session("s1", "sales", clock)])
        r = await c.post(f"/agents/{AGENT}/sync", json=body)
        assert r.status_code == 200
        answer = r.json()
        assert answer["stalls_refused"] == 3
        assert "3 stall(s) refused" in answer["stalls_error"] and "5 new stalls in a minute" in answer["stalls_error"]
        assert [s["session_id"] for s in (await c.get("/sessions")).json()["sessions"]] == ["s1"]  # the sync stood
        listed = (await c.get("/stalls")).json()
        assert sorted(s["seq"] for s in listed["stalls"]) == [1, 2, 3, 4, 5] and listed["dropped"] == 3
        # Updating a known stall is not a new one; a new minute opens the window again.
        again = await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, stalls=[stall(clock, 1), stall(clock, 9)]))
        assert again.json()["stalls_refused"] == 1
        clock.advance(seconds=61)
        later = await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, stalls=[stall(clock, 9)]))
        assert later.json()["stalls_refused"] == 0 and (await c.get("/stalls")).json()["total"] == 6
        assert "session_monitor_loop_stalls_dropped_total 4.0" in (await c.get("/metrics")).text


async def test_caps_drop_the_oldest_first_and_count_them(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target, clock, max_stalls_per_agent=3, max_stalls_total=5) as (_, c):
        for seq in range(1, 6):
            clock.advance(seconds=1)
            await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, stalls=[stall(clock, seq)]))
        listed = (await c.get("/stalls")).json()
        assert [s["seq"] for s in listed["stalls"]] == [5, 4, 3] and listed["dropped"] == 2
        for seq in range(1, 4):
            clock.advance(seconds=1)
            await c.post(f"/agents/{OTHER}/sync", json=sync_body(clock, host="web-2", stalls=[stall(clock, seq)]))
        listed = (await c.get("/stalls")).json()
        # Six kept would pass the total of five: the oldest of all (web-1's seq 3) went.
        assert [(s["host"], s["seq"]) for s in listed["stalls"]] == [
            ("web-2", 3), ("web-2", 2), ("web-2", 1), ("web-1", 5), ("web-1", 4),
        ]  # fmt: skip
        assert listed["dropped"] == 3
        agents = {a["host"]: a for a in (await c.get("/agents")).json()["agents"]}
        assert agents["web-1"]["loop"] is None  # no loop health sent; drops are still reported by GET /stalls


async def test_stalls_are_kept_as_long_as_the_audit_log(db_target: DatabaseTarget, clock: FakeClock) -> None:
    async with serving(db_target, clock) as (app, c):
        await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, stalls=[stall(clock, 1)]))
        clock.advance(days=2)
        await c.post(f"/agents/{AGENT}/sync", json=sync_body(clock, stalls=[stall(clock, 2)]))
        await reap_once(app.state.store, expire_after_s=600, history_retention_s=3600, audit_retention_s=86_400)
        assert [s["seq"] for s in (await c.get("/stalls")).json()["stalls"]] == [2]


async def test_a_version_6_database_upgrades_and_its_agents_keep_working(
    db_target: DatabaseTarget, clock: FakeClock
) -> None:
    import sqlalchemy as sa

    from session_monitor.store import Database, migrations
    from session_monitor.store.models import UTCDateTime

    db = Database(db_target.url, schema=db_target.schema)
    try:
        async with db.write_engine.begin() as conn:
            if db_target.schema:
                await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{db_target.schema}"')
            assert await conn.run_sync(lambda c: migrations.upgrade(c, target=6)) == [1, 2, 3, 4, 5, 6]
            v6_agents = sa.Table(
                "agents",
                sa.MetaData(),
                sa.Column("agent_id", sa.String(64)),
                sa.Column("host", sa.String(255)),
                sa.Column("pid", sa.Integer()),
                sa.Column("command", sa.String(1000)),
                sa.Column("versions", sa.JSON()),
                sa.Column("started_at", UTCDateTime()),
                sa.Column("last_seen", UTCDateTime()),
            )
            await conn.execute(
                v6_agents.insert().values(
                    agent_id=AGENT,
                    host="old-host",
                    pid=7,
                    command="panel serve",
                    versions={},
                    started_at=clock.now,
                    last_seen=clock.now,
                )  # fmt: skip
            )
    finally:
        await db.close()
    async with serving(db_target, clock) as (_, c):
        (agent,) = (await c.get("/agents")).json()["agents"]
        assert agent["host"] == "old-host" and agent["loop"] is None
        body = sync_body(clock, host="old-host", pid=7, loop=loop_health(), stalls=[stall(clock, 1)])
        assert (await c.post(f"/agents/{AGENT}/sync", json=body)).json()["stalls_refused"] == 0
        assert (await c.get("/agents")).json()["agents"][0]["loop"]["busy"] == 0.37
        assert (await c.get("/stalls")).json()["total"] == 1
