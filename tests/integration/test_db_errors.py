"""Database errors get the status that says what is wrong, on SQLite and the real PostgreSQL.

- A number the database cannot store is refused with 422 naming the allowed range (it was a 503
  "database unavailable" on PostgreSQL: a request that can never succeed, told to retry).
- A full disk answers 507 "database disk is full" (not "unavailable"), and ``/healthz`` reports
  ``database: disk_full`` until a write succeeds again. The disk is really full: a small tmpfs holds
  the SQLite file, or the PostgreSQL tablespace of the test's database.
- Errors raised by the real drivers are classified: data errors are never "unavailable".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from session_monitor.server import Settings, create_app
from session_monitor.server.errors import DatabaseFault, classify
from tests.conftest import DatabaseTarget
from tests.helpers import pg_admin

INT32_MAX = 2**31 - 1


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client


# -- numbers out of the columns' range --------------------------------------------------------------------------------


@pytest.mark.parametrize("after", [INT32_MAX + 1, 4611686018427387903, 2**62])
async def test_command_cursor_beyond_int32_is_refused_with_its_range(db_target: DatabaseTarget, after: int) -> None:
    async with serving(db_target.settings()) as client:
        response = await client.get("/agents/agent-0001/commands", params={"after": after})
        assert response.status_code == 422, response.text
        assert str(INT32_MAX) in response.json()["detail"]
        ok = await client.get("/agents/agent-0001/commands", params={"after": INT32_MAX})
        assert ok.status_code == 200, ok.text


async def test_agent_pid_beyond_int32_is_refused(db_target: DatabaseTarget) -> None:
    body = {"agent": {"host": "h", "pid": INT32_MAX + 1, "started_at": "2026-01-01T00:00:00Z"}}
    async with serving(db_target.settings()) as client:
        response = await client.post("/agents/agent-0001/sync", json=body)
        assert response.status_code == 422, response.text
        assert str(INT32_MAX) in response.json()["detail"]


# -- errors of the real drivers, classified --------------------------------------------------------------------------


async def _raised(url: str, statement: str, params: dict[str, object]) -> BaseException:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement), params)
    except Exception as exc:
        return exc
    finally:
        await engine.dispose()
    raise AssertionError(f"{statement} did not fail")


async def test_postgres_data_errors_are_not_unavailable(pg_database: str) -> None:
    url = make_url(pg_database).set(drivername="postgresql+asyncpg")
    bound = await _raised(url.render_as_string(False), "SELECT CAST(:x AS int4)", {"x": 2**62})
    computed = await _raised(url.render_as_string(False), "SELECT CAST(:x AS int4) + 2147483647", {"x": 1})
    assert classify(bound) is DatabaseFault.BAD_VALUE
    assert classify(computed) is DatabaseFault.BAD_VALUE
    refused = await _raised("postgresql+asyncpg://root@127.0.0.1:1/none", "SELECT 1", {})
    assert classify(refused) is DatabaseFault.UNAVAILABLE


async def test_sqlite_errors_are_classified(tmp_path: Path) -> None:
    locked_path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(locked_path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        engine = create_async_engine(f"sqlite+aiosqlite:///{locked_path}", connect_args={"timeout": 0.05})
        try:
            async with engine.begin() as conn:
                await conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        except Exception as exc:
            assert classify(exc) is DatabaseFault.UNAVAILABLE
        else:
            raise AssertionError("a locked database took a write")
        finally:
            await engine.dispose()
    finally:
        holder.close()
    overflow = await _raised(f"sqlite+aiosqlite:///{tmp_path / 'o.sqlite3'}", "SELECT :x", {"x": 2**70})
    assert classify(overflow) is DatabaseFault.BAD_VALUE


# -- a full disk, for real ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def tiny_disk(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on a fresh folder any user may enter (PostgreSQL's server too)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (a really full disk)")
    folder = Path(tempfile.mkdtemp(prefix="sm-full-"))
    folder.chmod(0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
        folder.rmdir()


def fill(folder: Path) -> Path:
    """Take every free byte of the filesystem with a ballast file; returns it (delete it to free the space)."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    return ballast


async def _register_until_refused(client: httpx.AsyncClient, limit: int = 5_000) -> httpx.Response:
    for i in range(limit):
        response = await client.post("/sessions", json={"app_name": "filler", "user_id": f"{i:06d}" + "x" * 190})
        if response.status_code != 200:
            return response
    raise AssertionError(f"{limit} writes went through on a full disk")


async def _check_disk_full_then_recovery(client: httpx.AsyncClient, ballast: Path) -> None:
    refused = await _register_until_refused(client)
    assert refused.status_code == 507, refused.text
    assert "disk is full" in refused.json()["detail"]
    health = await client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["database"] == "disk_full"
    assert health.json()["status"] == "degraded"
    # Reads still work on a full disk.
    assert (await client.get("/sessions", params={"limit": 1})).status_code == 200
    ballast.unlink()
    written = await client.post("/sessions", json={"app_name": "after"})
    assert written.status_code == 200, written.text
    health = await client.get("/healthz")
    assert health.status_code == 200, health.text
    assert health.json()["database"] == "ok"


async def test_sqlite_full_disk_is_507_and_reported_by_healthz() -> None:
    with tiny_disk("1m") as disk:
        async with serving(Settings(database_url=f"sqlite:///{disk / 'monitor.sqlite3'}", run_reaper=False)) as c:
            assert (await c.post("/sessions", json={"app_name": "before"})).status_code == 200
            await _check_disk_full_then_recovery(c, fill(disk))


async def test_postgres_full_disk_is_507_and_reported_by_healthz(pg_database: str) -> None:
    with tiny_disk("32m") as disk:  # a new database takes ~2 MB of it before the schema and its tables
        space = disk / "pg"
        space.mkdir()
        shutil.chown(space, "postgres", "postgres")
        name = f"sm_full_{uuid.uuid4().hex[:8]}"
        await pg_admin(f"CREATE TABLESPACE {name} LOCATION '{space}'")
        try:
            await pg_admin(f'CREATE DATABASE "{name}" TABLESPACE {name}')
            try:
                url = str(make_url(pg_database).set(database=name))
                async with serving(Settings(database_url=url, run_reaper=False)) as client:
                    assert (await client.post("/sessions", json={"app_name": "before"})).status_code == 200
                    await _check_disk_full_then_recovery(client, fill(disk))
            finally:
                await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await asyncio.sleep(0)
            await pg_admin(f"DROP TABLESPACE IF EXISTS {name}")


@pytest.mark.parametrize(
    ("changed_since", "status"),
    [
        ("0001-01-01T00:00:00Z", 200),  # before anything changed: every session
        ("0001-01-01T00:00:00+05:00", 422),  # year 0 in UTC
        ("9999-12-31T23:59:59Z", 200),
        ("9999-12-31T23:59:59-05:00", 422),  # year 10000 in UTC
    ],
)
async def test_changed_since_at_the_ends_of_time(db_target: DatabaseTarget, changed_since: str, status: int) -> None:
    async with serving(db_target.settings()) as client:
        created = await client.post("/sessions", json={"app_name": "a"})
        response = await client.get("/sessions", params={"changed_since": changed_since})
        assert response.status_code == status, response.text
        if status == 200:
            ids = {s["session_id"] for s in response.json()["sessions"]}
            assert ids == ({created.json()["session_id"]} if changed_since.startswith("0001") else set())
        else:
            assert "out of range once converted to UTC" in response.json()["detail"]
