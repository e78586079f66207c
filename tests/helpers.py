"""Test helpers: free ports, polling, real servers in threads and in subprocesses, the REST calls many tests make."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from session_monitor.server import Settings, create_app

CHROMIUM = os.environ.get("SESSION_MONITOR_CHROMIUM", "/usr/bin/chromium")
"""Debian's Chromium: Playwright cannot download its own browsers here."""

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Headless, and nothing that reaches outside this machine (background networking, updates, sync)."""

PG_ADMIN_URL = os.environ.get("SESSION_MONITOR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


PROTOTYPE_ROW_FIELDS = frozenset({
    "session_id", "app_name", "user_id", "start_time", "last_heartbeat", "duration_seconds", "status",
    "current_task", "is_stale", "kill_requested",
})  # fmt: skip
"""The fields of a ``GET /sessions`` row that the prototype's dashboard reads."""


async def pg_admin(sql: str, admin_url: str = PG_ADMIN_URL) -> None:
    """Run one statement on the PostgreSQL maintenance database (``CREATE``/``DROP DATABASE``)."""
    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    conn = await asyncpg.connect(host=url.host, port=url.port, user=url.username, database=url.database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _utcnow() -> datetime:
    return datetime.now(UTC)


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, clock: Callable[[], datetime] = _utcnow
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app with these settings (and clock), its lifespan started, and a client talking to it over ASGI."""
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield app, client


async def get(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    """``GET /sessions/{id}``, which must answer 200."""
    response = await client.get(f"/sessions/{session_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def live(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    """``GET /sessions`` with these query parameters, which must answer 200."""
    response = await client.get("/sessions", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def live_ids(client: httpx.AsyncClient, **params: Any) -> list[str]:
    """The ids ``GET /sessions`` lists, in its order."""
    return [s["session_id"] for s in (await live(client, **params))["sessions"]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with a clear message on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # keep polling through start-up errors
            last = exc
        else:
            if last:
                return last
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s (last value: {last!r})")


@contextlib.contextmanager
def serve_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Run ``app`` under a real uvicorn server in a thread; yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout_s=20)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


class ServerProcess:
    """``session-monitor serve`` as a child process; stopped (or SIGKILLed) only by its own PID."""

    def __init__(
        self,
        env: dict[str, str],
        port: int | None = None,
        args: tuple[str, ...] = (),
        log_path: Path | None = None,
        measure_coverage: bool = True,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # No dashboard child unless a test asks for one (serve starts one on port 5000 by default).
        self.env = {**os.environ, "SESSION_MONITOR_DASHBOARD_PORT": "0", **env}
        if not measure_coverage:  # coverage.py measures a child when this is set (pyproject: patch = subprocess)
            self.env.pop("COVERAGE_PROCESS_CONFIG", None)
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        command = [sys.executable, "-m", "session_monitor", "serve", "--port", str(self.port), *self.args]
        if self.log_path:
            with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
                self.proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        else:
            self.proc = subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        try:
            wait_until(self._healthy, timeout_s=timeout_s)
        except BaseException:
            self.kill()  # never healthy: the caller gets no handle to stop it, so it must not outlive this call
            raise
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}; log: {self.log_path}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class FakeSessions:
    """A session finder the test controls, as Panel's is: ``with sessions.current(key):`` makes ``key`` the session
    of the calling thread (see ``session_monitor.client.threads``)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self) -> str | None:
        return getattr(self._local, "key", None)

    @contextlib.contextmanager
    def current(self, key: str) -> Iterator[None]:
        self._local.key = key
        try:
            yield
        finally:
            self._local.key = None
