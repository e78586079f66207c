"""The schema upgrades in place: rows written in an older shape survive and stay usable.

Each test builds an old database with ``migrations.upgrade(conn, target=N)``,
writes rows the way that version's code did, then starts the current code on it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from session_monitor.server import create_app
from session_monitor.store import Database, SessionFilters, Store, migrations
from session_monitor.store.models import UTCDateTime
from tests.conftest import DatabaseTarget, FakeClock

# The tables as versions 1 and 2 left them, frozen here like the migrations themselves.


def _v1_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("session_id", sa.String(128), primary_key=True),
        sa.Column("app_name", sa.String(200), nullable=False),
        sa.Column("user_id", sa.String(200)),
        sa.Column("start_time", UTCDateTime(), nullable=False),
        sa.Column("last_heartbeat", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("current_task", sa.String(500)),
        sa.Column("kill_requested", sa.Boolean(), nullable=False),
    ]


V1_SESSIONS = sa.Table("sessions", sa.MetaData(), *_v1_columns())
V2_SESSIONS = sa.Table(
    "sessions",
    sa.MetaData(),
    *_v1_columns(),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer()),
    sa.Column("task_started_at", UTCDateTime()),
    sa.Column("kill_requested_at", UTCDateTime()),
    sa.Column("kill_requested_by", sa.String(100)),
    sa.Column("kill_reason", sa.String(500)),
    sa.Column("ended_at", UTCDateTime()),
    sa.Column("end_reason", sa.String(32)),
    sa.Column("ended_by", sa.String(100)),
)


def database(target: DatabaseTarget) -> Database:
    return Database(target.url, schema=target.schema)


async def build_old(target: DatabaseTarget, version: int, rows: list[dict[str, Any]]) -> None:
    """A database at schema ``version`` holding ``rows`` in that version's shape."""
    table = {1: V1_SESSIONS, 2: V2_SESSIONS}[version]
    db = database(target)
    try:
        async with db.write_engine.begin() as conn:
            if target.schema:
                await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{target.schema}"')
            applied = await conn.run_sync(lambda c: migrations.upgrade(c, target=version))
            assert applied == list(range(1, version + 1))
            if rows:
                await conn.execute(table.insert(), rows)
    finally:
        await db.close()


async def read(target: DatabaseTarget, fn: Any) -> Any:
    db = database(target)
    try:
        return await db.read(fn)
    finally:
        await db.close()


def applied_versions(conn: sa.Connection) -> list[tuple[int, datetime]]:
    rows = conn.execute(
        sa.select(migrations.schema_migrations.c.version, migrations.schema_migrations.c.applied_at).order_by(
            migrations.schema_migrations.c.version
        )
    ).all()
    return [(int(v), at) for v, at in rows]


def column_names(conn: sa.Connection, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(table)}


async def upgrade(target: DatabaseTarget) -> list[int]:
    db = database(target)
    try:
        return await db.upgrade()
    finally:
        await db.close()


def v1_rows(clock: FakeClock) -> list[dict[str, Any]]:
    t0 = clock.now
    return [
        {
            "session_id": "old-idle",
            "app_name": "task_runner",
            "user_id": None,
            "start_time": t0 - timedelta(hours=1),
            "last_heartbeat": t0 - timedelta(seconds=30),
            "status": "idle",
            "current_task": None,
            "kill_requested": False,
        },
        {
            "session_id": "old-running",
            "app_name": "task_runner",
            "user_id": "alice",
            "start_time": t0 - timedelta(minutes=20),
            "last_heartbeat": t0 - timedelta(seconds=10),
            "status": "running",
            "current_task": "Generating Report",
            "kill_requested": False,
        },
        {
            "session_id": "old-killed",
            "app_name": "pool_app",
            "user_id": "bob",
            "start_time": t0 - timedelta(minutes=5),
            "last_heartbeat": t0 - timedelta(minutes=3),
            "status": "idle",
            "current_task": None,
            "kill_requested": True,
        },
    ]


async def test_version_1_database_upgrades_without_losing_rows(db_target: DatabaseTarget, clock: FakeClock) -> None:
    await build_old(db_target, 1, v1_rows(clock))

    assert await upgrade(db_target) == list(range(2, migrations.LATEST_VERSION + 1))

    def check_schema(conn: sa.Connection) -> None:
        assert [v for v, _ in applied_versions(conn)] == list(range(1, migrations.LATEST_VERSION + 1))
        assert {"host", "pid", "task_started_at", "ended_at", "end_reason", "kill_reason"} <= column_names(
            conn, "sessions"
        )
        assert sa.inspect(conn).has_table("audit_log")
        assert sa.inspect(conn).has_table("policies") and "exempt" in column_names(conn, "sessions")

    await read(db_target, check_schema)

    db = database(db_target)
    try:
        store = Store(db, stale_after_s=120, clock=clock)
        rows, total = await store.list_sessions(SessionFilters())
        assert total == 3
        by_id = {r["session_id"]: r for r in rows}
        assert list(by_id) == ["old-killed", "old-running", "old-idle"]  # newest first
        idle, running, killed = by_id["old-idle"], by_id["old-running"], by_id["old-killed"]
        assert (idle["app_name"], idle["user_id"], idle["state"]) == ("task_runner", None, "idle")
        assert idle["start_time"] == clock.now - timedelta(hours=1)
        assert idle["duration_seconds"] == 3600.0
        assert idle["host"] is None and idle["pid"] is None and idle["ended_at"] is None
        assert (running["user_id"], running["state"], running["current_task"]) == (
            "alice",
            "running",
            "Generating Report",
        )
        assert running["task_started_at"] is None and running["task_seconds"] is None
        assert killed["kill_requested"] is True and killed["is_stale"] is True and killed["state"] == "stale"
        assert not any(r["exempt"] for r in rows)  # v9's flag defaults to false on old rows
        assert (await store.list_sessions(SessionFilters(), live=False)) == ([], 0)
    finally:
        await db.close()

    # and through the API, with every newer feature
    app = create_app(db_target.settings(), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client,
    ):
        assert (await client.post("/sessions/old-killed/heartbeat")).json() == {"kill_requested": True}
        assert (await client.post("/sessions/old-idle/heartbeat")).json() == {"kill_requested": False}

        response = await client.put(
            "/sessions/old-running/status", json={"status": "running", "current_task": "Generating Report"}
        )
        assert response.status_code == 200
        row = (await client.get("/sessions/old-running")).json()
        assert datetime.fromisoformat(row["task_started_at"]) == clock.now  # timing starts now

        response = await client.post(
            "/sessions/old-idle/kill", json={"reason": "upgrade"}, headers={"X-Session-Monitor-Actor": "ops"}
        )
        assert response.json() == {"status": "kill_requested"}
        [entry] = (await client.get("/audit")).json()["entries"]
        assert (entry["actor"], entry["action"], entry["target"]) == ("ops", "kill", "old-idle")

        assert (await client.delete("/sessions/old-killed")).json() == {"status": "deleted"}
        history = (await client.get("/history")).json()
        assert [(s["session_id"], s["end_reason"]) for s in history["sessions"]] == [("old-killed", "killed")]

        new_id = (await client.post("/sessions", json={"app_name": "task_runner", "user_id": None})).json()[
            "session_id"
        ]
        listed = (await client.get("/sessions", params={"app": "task_runner"})).json()
        assert {s["session_id"] for s in listed["sessions"]} == {"old-idle", "old-running", new_id}


async def test_version_2_database_upgrades_without_losing_rows(db_target: DatabaseTarget, clock: FakeClock) -> None:
    t0 = clock.now
    base = {"user_id": "carol", "status": "idle", "current_task": None, "kill_requested": False}
    none = dict.fromkeys(
        ["kill_requested_at", "kill_requested_by", "kill_reason", "ended_at", "end_reason", "ended_by"]
    )
    rows = [
        {
            **base,
            **none,
            "session_id": "v2-live",
            "app_name": "reports",
            "start_time": t0 - timedelta(minutes=10),
            "last_heartbeat": t0 - timedelta(seconds=5),
            "status": "running",
            "current_task": "Export",
            "host": "node-7",
            "pid": 31337,
            "task_started_at": t0 - timedelta(minutes=2),
        },
        {
            **base,
            **none,
            "session_id": "v2-ended",
            "app_name": "reports",
            "start_time": t0 - timedelta(hours=2),
            "last_heartbeat": t0 - timedelta(hours=1),
            "host": "node-7",
            "pid": 31337,
            "task_started_at": None,
            "kill_requested": True,
            "kill_requested_at": t0 - timedelta(hours=1, minutes=1),
            "kill_requested_by": "admin",
            "kill_reason": "runaway",
            "ended_at": t0 - timedelta(hours=1),
            "end_reason": "killed",
            "ended_by": "admin",
        },
    ]
    await build_old(db_target, 2, rows)

    assert await upgrade(db_target) == list(range(3, migrations.LATEST_VERSION + 1))

    app = create_app(db_target.settings(), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client,
    ):
        [live] = (await client.get("/sessions")).json()["sessions"]
        assert live["session_id"] == "v2-live"
        assert (live["host"], live["pid"], live["state"], live["current_task"]) == (
            "node-7",
            31337,
            "running",
            "Export",
        )
        assert live["task_seconds"] == 120.0
        # v5 stamps existing rows with their latest known time, so cursors see them once
        assert datetime.fromisoformat(live["changed_at"]) == t0 - timedelta(seconds=5)
        assert (live["visibility"], live["idle_seconds"], live["disconnected_at"]) == (None, None, None)
        assert (await client.get("/sessions", params={"host": "node-7"})).json()["total"] == 1

        history = (await client.get("/history", params={"reason": "killed"})).json()
        assert history["total"] == 1
        [ended] = history["sessions"]
        assert ended["session_id"] == "v2-ended" and ended["state"] == "ended"
        assert (ended["kill_reason"], ended["kill_requested_by"], ended["ended_by"]) == (
            "runaway",
            "admin",
            "admin",
        )
        assert ended["duration_seconds"] == 3600.0
        assert datetime.fromisoformat(ended["ended_at"]) == t0 - timedelta(hours=1)
        assert datetime.fromisoformat(ended["changed_at"]) == t0 - timedelta(hours=1)

        # the audit log is new in version 3 and works at once
        assert (await client.get("/audit")).json() == {"entries": [], "total": 0}
        assert (await client.post("/apps/reports/kill-all")).json() == {"killed_count": 1}
        [entry] = (await client.get("/audit")).json()["entries"]
        assert (entry["action"], entry["target"], entry["detail"]["killed_count"]) == ("kill_all", "reports", 1)
        assert (await client.post("/sessions/v2-ended/heartbeat")).status_code == 404


async def test_up_to_date_database_applies_nothing(db_target: DatabaseTarget, clock: FakeClock) -> None:
    assert await upgrade(db_target) == list(range(1, migrations.LATEST_VERSION + 1))
    first = await read(db_target, applied_versions)
    assert [v for v, _ in first] == list(range(1, migrations.LATEST_VERSION + 1))

    assert await upgrade(db_target) == []
    assert await read(db_target, applied_versions) == first

    # two starts of the server: the second finds the first one's data
    app = create_app(db_target.settings(), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client,
    ):
        session_id = (await client.post("/sessions", json={"app_name": "a", "user_id": "u"})).json()["session_id"]
    app = create_app(db_target.settings(), clock=clock)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client,
    ):
        row = (await client.get(f"/sessions/{session_id}")).json()
        assert (row["app_name"], row["user_id"], row["state"]) == ("a", "u", "idle")
    assert await read(db_target, applied_versions) == first


async def test_database_newer_than_code_is_refused(db_target: DatabaseTarget, clock: FakeClock) -> None:
    assert await upgrade(db_target) == list(range(1, migrations.LATEST_VERSION + 1))
    future = migrations.LATEST_VERSION + 1
    db = database(db_target)
    try:
        async with db.write_engine.begin() as conn:
            await conn.execute(
                migrations.schema_migrations.insert().values(
                    version=future, description="from the future", applied_at=clock.now
                )
            )
    finally:
        await db.close()

    expected = rf"schema is version {future}, newer than this release supports \({migrations.LATEST_VERSION}\)"
    with pytest.raises(RuntimeError, match=expected):
        await upgrade(db_target)

    app = create_app(db_target.settings(), clock=clock)
    with pytest.raises(RuntimeError, match="upgrade panel-session-monitor"):
        async with app.router.lifespan_context(app):
            pytest.fail("the server started on a database newer than itself")

    versions = await read(db_target, applied_versions)
    assert [v for v, _ in versions] == [*range(1, migrations.LATEST_VERSION + 1), future]


async def test_unknown_target_version_is_refused(db_target: DatabaseTarget) -> None:
    db = database(db_target)
    try:
        async with db.write_engine.begin() as conn:
            if db_target.schema:
                await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{db_target.schema}"')
            with pytest.raises(ValueError, match="unknown schema version"):
                await conn.run_sync(lambda c: migrations.upgrade(c, target=migrations.LATEST_VERSION + 1))
            assert await conn.run_sync(migrations.current_version) == 0
    finally:
        await db.close()


async def test_failed_upgrade_leaves_database_as_it_was(db_target: DatabaseTarget, clock: FakeClock) -> None:
    await build_old(db_target, 1, v1_rows(clock))
    # An object in the way of version 2's last step makes that step fail after its first ones ran.
    db = database(db_target)
    try:
        async with db.write_engine.begin() as conn:
            await conn.exec_driver_sql("CREATE INDEX ix_sessions_last_heartbeat ON sessions (start_time)")
    finally:
        await db.close()

    with pytest.raises(sa.exc.SQLAlchemyError, match="ix_sessions_last_heartbeat"):
        await upgrade(db_target)

    def check(conn: sa.Connection) -> None:
        assert [v for v, _ in applied_versions(conn)] == [1]
        assert "host" not in column_names(conn, "sessions")
        assert not sa.inspect(conn).has_table("audit_log")
        ids = conn.execute(sa.select(V1_SESSIONS.c.session_id).order_by(V1_SESSIONS.c.session_id)).scalars().all()
        assert ids == ["old-idle", "old-killed", "old-running"]

    await read(db_target, check)

    db = database(db_target)
    try:
        async with db.write_engine.begin() as conn:
            await conn.exec_driver_sql("DROP INDEX ix_sessions_last_heartbeat")
    finally:
        await db.close()
    assert await upgrade(db_target) == list(range(2, migrations.LATEST_VERSION + 1))


CHAIN = ("loop_health", "session_cost", "notices", "drain", "policies", "shared_config", "listing_order")
"""The migrations from v7 on, in order (each function is named ``_v<version>_<what>``)."""


def test_the_chain_is_consecutive_and_in_the_order_the_features_landed() -> None:
    versions = [m.version for m in migrations.MIGRATIONS]
    assert versions == list(range(1, len(versions) + 1)) and versions[-1] == migrations.LATEST_VERSION
    names = [m.apply.__name__ for m in migrations.MIGRATIONS]
    assert all(name.startswith(f"_v{m.version}_") for name, m in zip(names, migrations.MIGRATIONS, strict=True))
    assert names[6:] == [f"_v{7 + i}_{what}" for i, what in enumerate(CHAIN)]
