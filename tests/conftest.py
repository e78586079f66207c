"""Fixtures: every store-backed test runs on SQLite and on the real PostgreSQL at 127.0.0.1:5432.

PostgreSQL gets one database per test run and one schema per test. A missing
PostgreSQL fails the run; it is never skipped.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from session_monitor.client import threads
from session_monitor.server import Settings, create_app
from tests.helpers import PG_ADMIN_URL, FakeSessions, pg_admin

TEST_SUITE_VARIABLES = frozenset(
    {
        "SESSION_MONITOR_TEST_PG_URL",
        "SESSION_MONITOR_TEST_EXAMPLES",
        "SESSION_MONITOR_CHROMIUM",
        "SESSION_MONITOR_UPDATE_SCREENSHOTS",
    }
)
"""The test suite's own knobs: read by the tests, never by the code under test, so they survive the scrub."""


@pytest.fixture(autouse=True)
def _no_session_monitor_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code under test reads SESSION_MONITOR_* variables: none from the developer's shell leaks into a test
    (a token, a URL, a database). Tests set what they need with ``monkeypatch.setenv`` or a child's ``env``."""
    for name in list(os.environ):
        if name.startswith("SESSION_MONITOR_") and name not in TEST_SUITE_VARIABLES:
            monkeypatch.delenv(name)


@dataclass
class DatabaseTarget:
    """Where one test's data lives: a URL and, for PostgreSQL, a schema of its own."""

    kind: str
    url: str
    schema: str | None = None

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {"database_url": self.url, "database_schema": self.schema, "run_reaper": False}
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    def env(self) -> dict[str, str]:
        env = {"SESSION_MONITOR_DATABASE_URL": self.url}
        if self.schema:
            env["SESSION_MONITOR_DATABASE_SCHEMA"] = self.schema
        return env


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    name = f"sm_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    try:
        asyncio.run(pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # a missing PostgreSQL is a failure, never a skip
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required for the tests: {exc}")
    yield str(make_url(PG_ADMIN_URL).set(database=name))
    asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_target(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseTarget:
    if request.param == "sqlite":
        return DatabaseTarget("sqlite", f"sqlite:///{tmp_path / 'monitor.sqlite3'}")
    url = request.getfixturevalue("pg_database")
    return DatabaseTarget("postgresql", url, schema=f"t_{uuid.uuid4().hex[:12]}")


class FakeClock:
    """A clock tests move forward instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def sessions() -> Iterator[FakeSessions]:
    """Make ``with sessions.current(key):`` the current session of a thread, as Panel does for its callbacks."""
    finder = FakeSessions()
    threads.add_finder(finder)
    yield finder
    threads.remove_finder(finder)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(db_target: DatabaseTarget) -> Settings:
    return db_target.settings()


@pytest.fixture
async def app(settings: Settings, clock: FakeClock) -> AsyncIterator[object]:
    application = create_app(settings, clock=clock)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI every test runs: a skip (say, for a missing service or browser) is turned into a failure."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where every test must run: {report.longrepr}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API keeps an event loop running in the main thread while its
    session-wide browser lives, which would stop pytest-asyncio from running the async tests after it."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
