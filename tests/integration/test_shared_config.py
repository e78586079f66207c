"""Shared config between processes' agents and a real server (uvicorn in a thread; SQLite and PostgreSQL).

Several agents in one test process stand for several Panel processes: each has its own HTTP connections,
long-poll and copy of the config. The server tells agents to sync every 60 s, so a change that reaches the
others in time came through the command long-poll (the push), not a sync.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from session_monitor.client.agent import Agent
from session_monitor.client.config import ClientConfig
from session_monitor.client.shared import BlockingCallWarning, SharedConfig
from session_monitor.errors import ConfigConflict, ConfigError, ServerUnavailable
from session_monitor.server import create_app
from tests.conftest import DatabaseTarget
from tests.helpers import free_port, serve_in_thread, wait_until


def make_agent(url: str) -> Agent:
    return Agent(
        ClientConfig(server_url=url, sync_interval_s=0.2, flush_delay_s=0.02, long_poll_s=10.0, request_timeout_s=5.0)
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config-cache"
    monkeypatch.setenv("SESSION_MONITOR_CONFIG_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def server_url(db_target: DatabaseTarget, cache: Path) -> Iterator[str]:
    app = create_app(db_target.settings(sync_interval_s=60.0))
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def agents(server_url: str) -> Iterator[list[Agent]]:
    made = [make_agent(server_url) for _ in range(3)]
    yield made
    for agent in made:
        agent.stop(timeout_s=2.0)


def test_a_write_reaches_every_process_and_its_watchers_once_per_version(agents: list[Agent]) -> None:
    configs = [SharedConfig("reports", agent) for agent in agents]
    for cfg in configs:
        assert cfg.wait_loaded()
    seen: list[tuple[Any, int]] = []
    lock = threading.Lock()

    def on_change(value: Any, version: int) -> None:
        with lock:
            seen.append((value, version))

    configs[2].watch("theme", on_change)
    assert configs[0].set("theme", {"dark": True}) == 1
    assert configs[0].get("theme") == {"dark": True}  # its own write, at once
    wait_until(lambda: configs[1].get("theme") == {"dark": True} and configs[2].version("theme") == 1, timeout_s=5)
    assert configs[1].set("theme", {"dark": False}, expected_version=1) == 2
    wait_until(lambda: configs[2].get("theme") == {"dark": False}, timeout_s=5)
    configs[0].delete("theme")
    wait_until(lambda: configs[2].version("theme") == 0, timeout_s=5)
    wait_until(lambda: len(seen) == 3, timeout_s=5)
    assert seen == [({"dark": True}, 1), ({"dark": False}, 2), (None, 3)]
    # A returned value is a copy: changing it changes nothing held.
    configs[0].set("list", [1])
    wait_until(lambda: configs[1].get("list") == [1], timeout_s=5)
    configs[1].get("list").append(2)
    assert configs[1].get("list") == [1]


def test_a_stale_compare_and_set_raises_with_the_current_value(agents: list[Agent]) -> None:
    a, b = SharedConfig("app", agents[0]), SharedConfig("app", agents[1])
    a.wait_loaded()
    a.set("n", 10)
    with pytest.raises(ConfigConflict) as caught:
        b.set("n", 11, expected_version=0)
    assert caught.value.current_version == 1 and caught.value.current_value == 10
    assert b.get("n") == 10  # the conflict told this process too
    assert b.update("n", lambda n: n + 1, default=0) == 11
    wait_until(lambda: a.get("n") == 11, timeout_s=5)
    with pytest.raises(ConfigError):
        a.set("n", float("nan"))
    with pytest.raises(ConfigError):
        a.set("n", "x" * (256 * 1024))
    with pytest.raises(ConfigError):
        a.set("bad key", 1)


async def test_the_async_forms_and_the_warning_on_a_loop(agents: list[Agent]) -> None:
    cfg = SharedConfig("loop", agents[0])
    await asyncio.to_thread(cfg.wait_loaded)
    assert await cfg.aset("k", 1) == 1
    assert await cfg.aupdate("k", lambda v: v + 1) == 2
    assert cfg.get("k") == 2
    with pytest.warns(BlockingCallWarning, match="aset"):
        cfg.set("k", 3)
    got: list[tuple[Any, int, bool]] = []
    loop = asyncio.get_running_loop()
    cfg.watch("k", lambda value, version: got.append((value, version, asyncio.get_running_loop() is loop)))
    other = SharedConfig("loop", agents[1])
    await asyncio.to_thread(other.wait_loaded)
    await other.aset("k", 4)
    for _ in range(500):
        if got:
            break
        await asyncio.sleep(0.01)
    assert got == [(4, 4, True)]  # called on the loop that registered it


def test_offline_writes_raise_and_a_restart_starts_from_the_copy_on_disk(db_target: DatabaseTarget, cache: Path):
    port = free_port()
    app = create_app(db_target.settings(sync_interval_s=60.0))
    with serve_in_thread(app, port) as url:
        agent = make_agent(url)
        cfg = SharedConfig("kept", agent)
        cfg.wait_loaded()
        cfg.set("a", {"x": 1})
        cfg.set("b", "two")
        agent.config_cache.flush()
        agent.stop(timeout_s=2.0)
    # The server is gone: a new process starts with the last values, and cannot write.
    agent = make_agent(url)
    try:
        cfg = SharedConfig("kept", agent)
        assert cfg.get("a") == {"x": 1} and cfg.get("b") == "two" and cfg.version("b") == 1
        assert not cfg.loaded
        with pytest.raises(ServerUnavailable, match="not written"):
            cfg.set("a", 2)
        assert cfg.get("a") == {"x": 1}
    finally:
        agent.stop(timeout_s=2.0)
    # Back up (same database): the write was never queued, the value is the old one.
    app = create_app(db_target.settings(sync_interval_s=60.0))
    with serve_in_thread(app, port) as url:
        got = httpx.get(f"{url}/config/kept/a").json()
        assert got["value"] == {"x": 1} and got["version"] == 1
