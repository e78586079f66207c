"""The readiness port (HTTP and HAProxy agent-check on one socket) and the drain it answers from."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from session_monitor.client.draining import Drain, DrainWatch
from session_monitor.client.readiness import ReadinessServer, ready_port
from session_monitor.errors import ConfigError
from tests.helpers import free_port


def wire(seconds: float, message: str = "deploy") -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "deadline": (now + timedelta(seconds=seconds)).isoformat(),
        "message": message,
        "started_at": now.isoformat(),
        "by": "ops",
    }


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Drain | None] = []
        self.due: list[Drain] = []

    def drain_changed(self, drain: Drain | None) -> None:
        self.changes.append(drain)

    def drain_due(self, drain: Drain) -> None:
        self.due.append(drain)


async def agent_check(port: int, send: bytes | None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if send is not None:
        writer.write(send)
        await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return answer


async def test_one_port_answers_http_and_agent_check_from_the_drain() -> None:
    watch = DrainWatch()
    port = free_port()
    server = ReadinessServer(watch, "127.0.0.1", port)
    assert await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/ready")).status_code == 200
            assert await agent_check(port, b"haproxy\n") == b"ready\n"
            watch.update(wire(60))
            unready = await client.get("/ready")
            assert unready.status_code == 503
            assert unready.text.startswith("draining until ")
            assert (await client.head("/")).status_code == 503
            assert await agent_check(port, b"haproxy\n") == b"drain\n"
            assert await agent_check(port, None) == b"drain\n"  # sends nothing: answered after a second
            watch.update(None)
            assert (await client.get("/ready")).status_code == 200
            assert await agent_check(port, b"haproxy\n") == b"ready\n"
    finally:
        await server.close()


async def test_a_taken_port_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    watch = DrainWatch()
    port = free_port()
    first = ReadinessServer(watch, "127.0.0.1", port)
    assert await first.start()
    try:
        second = ReadinessServer(watch, "127.0.0.1", port)
        assert not await second.start()
        assert "could not be opened" in caplog.text
    finally:
        await first.close()


async def test_listeners_hear_each_change_once_and_the_deadline() -> None:
    watch = DrainWatch()
    recorder = Recorder()
    watch.listen(recorder)
    drain = wire(0.2)
    watch.update(drain)
    watch.update(drain)  # the same drain again (every sync carries it): no new change
    assert [d.message if d else None for d in recorder.changes] == ["deploy"]
    assert not watch.ready
    await asyncio.sleep(0.4)
    assert [d.message for d in recorder.due] == ["deploy"]
    watch.update(wire(0.2, "moved"))
    watch.update(None)  # lifted before its deadline: never due
    await asyncio.sleep(0.4)
    assert len(recorder.due) == 1
    assert recorder.changes[-1] is None and watch.ready


async def test_a_malformed_drain_counts_as_none() -> None:
    watch = DrainWatch()
    watch.update({"deadline": "yesterday"})
    watch.update({"deadline": "2026-01-01T00:00:00"})  # naive
    watch.update("drain")
    assert watch.ready


def test_the_port_setting_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ready_port() is None
    monkeypatch.setenv("SESSION_MONITOR_READY_PORT", "15006")
    assert ready_port() == 15006
    monkeypatch.setenv("SESSION_MONITOR_READY_PORT", "70000")
    with pytest.raises(ConfigError, match="SESSION_MONITOR_READY_PORT"):
        ready_port()
