"""A Panel process that dies without saying goodbye: its sessions end as ``process_lost`` within 15 s.

Real processes throughout: a ``session-monitor serve`` child on SQLite or PostgreSQL, and a Python child
running an agent with several sessions. The server notices the agent's dropped long-poll and, with no sync
and no new long-poll from it for ``process_lost_after_s``, ends its sessions. The misfire guards are tested
as carefully: a server restart, a network blip (a proxy cutting every connection for 5 s) and a stopped
agent (SIGSTOP for 5 s) end nothing; an agent that comes back after being declared lost is live again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from session_monitor import defaults
from tests.conftest import DatabaseTarget
from tests.helpers import ServerProcess, free_port, wait_until
from tests.integration.test_replicas import Cluster

pytestmark = pytest.mark.slow

SESSIONS = 20
LOST_WITHIN_S = 15.0
"""The target: a SIGKILLed process's sessions are ended this soon."""
MISFIRE_BY_S = defaults.PROCESS_LOST_AFTER_S + 2 * defaults.LOST_CHECK_INTERVAL_S
"""A drop the server wrongly took for a lost process ends its sessions by then (the grace, then a check)."""

CHILD = """
import sys
from session_monitor import ClientConfig, SessionClient, get_agent

urls, count = sys.argv[1].split(","), int(sys.argv[2])
get_agent(ClientConfig(server_url=urls[0], fallback_urls=tuple(urls[1:]), flush_delay_s=0.05))
for i in range(count):
    tracker = SessionClient.get_tracker(f"lost-app-{i}", user_id=f"user-{i}")
    tracker.set_status("running", task="crunching")
    print(tracker.session_id, flush=True)
sys.stdin.readline()
"""


def start_agent_process(url: str, count: int = SESSIONS) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_MONITOR_")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    ids = [child.stdout.readline().strip() for _ in range(count)]
    if not all(ids):
        child.kill()
        child.communicate(timeout=10)
        raise AssertionError("the agent process failed to start")
    return child, ids


@contextlib.contextmanager
def agent_process(url: str, count: int = SESSIONS) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    child, ids = start_agent_process(url, count)
    try:
        yield child, ids
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


def sessions_by_id(url: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=url, timeout=10) as client:
        return {sid: client.get(f"/sessions/{sid}").json() for sid in ids}


def live_count(url: str, ids: list[str]) -> int:
    """How many of the sessions the server lists live (one it does not know yet is not)."""
    return sum(1 for s in sessions_by_id(url, ids).values() if "session_id" in s and s["ended_at"] is None)


def wait_live(url: str, ids: list[str]) -> None:
    """Every session listed live and running, and the agent's long-poll held (it starts with the agent)."""
    wait_until(lambda: live_count(url, ids) == len(ids), timeout_s=20)
    time.sleep(1.0)


@contextlib.contextmanager
def monitor(db_target: DatabaseTarget, tmp_path: Path, **env: str) -> Iterator[ServerProcess]:
    server = ServerProcess({**db_target.env(), **env}, log_path=tmp_path / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


# -- a proxy that can cut every connection -----------------------------------------------------------------------


class CuttingProxy:
    """A TCP proxy to ``target_port`` on its own thread; :meth:`cut` drops every connection and refuses for a while.

    A dropped connection is closed on both sides, as a network path that resets would be: the server
    sees the agent's long-poll go, the agent sees its requests fail.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event
        self._writers: set[asyncio.StreamWriter] = set()
        self._refuse_until = 0.0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CuttingProxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def cut(self, seconds: float) -> None:
        def do() -> None:
            self._refuse_until = time.monotonic() + seconds
            for writer in list(self._writers):
                writer.transport.abort()

        self._loop.call_soon_threadsafe(do)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self._ready.set()
        await self._stop.wait()
        server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()
        await asyncio.sleep(0.05)  # the aborted transports' connection_lost callbacks run: nothing left unclosed

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


# -- the tests ------------------------------------------------------------------------------------------------------


def test_sigkilled_process_sessions_end_as_process_lost(db_target: DatabaseTarget, tmp_path: Path) -> None:
    with monitor(db_target, tmp_path) as server, agent_process(server.url) as (child, ids):
        wait_live(server.url, ids)
        os.kill(child.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(lambda: live_count(server.url, ids) == 0, timeout_s=LOST_WITHIN_S, interval_s=0.1)
        took_s = time.monotonic() - killed_at
        rows = sessions_by_id(server.url, ids)
        assert {(s["end_reason"], s["ended_by"]) for s in rows.values()} == {("process_lost", "server")}, took_s
        with httpx.Client(base_url=server.url, timeout=10) as client:
            history = client.get("/history", params={"reason": "process_lost"}).json()
            assert sorted(s["session_id"] for s in history["sessions"]) == sorted(ids)
            metrics = client.get("/metrics").text
            assert f'session_monitor_sessions_ended_total{{reason="process_lost"}} {float(SESSIONS)}' in metrics
            agents = client.get("/agents").json()["agents"]
            assert child.pid not in [a["pid"] for a in agents]  # gone from the system status too


def test_server_restart_ends_nothing(db_target: DatabaseTarget, tmp_path: Path) -> None:
    """Every long-poll drops at once when the server goes; the next server saw none of it: nothing ends."""
    with monitor(db_target, tmp_path) as server, agent_process(server.url) as (_, ids):
        wait_live(server.url, ids)
        server.stop()  # SIGTERM: a graceful restart
        time.sleep(1.0)
        server.start()
        time.sleep(2.0)
        server.kill()  # and a crash
        time.sleep(1.0)
        server.start()
        time.sleep(MISFIRE_BY_S)
        assert live_count(server.url, ids) == len(ids)


def test_network_blip_ends_nothing(db_target: DatabaseTarget, tmp_path: Path) -> None:
    """A cut of 5 s drops the long-poll the server holds; the agent re-polls and syncs when it can: nothing ends."""
    with (
        monitor(db_target, tmp_path) as server,
        CuttingProxy(server.port) as proxy,
        agent_process(proxy.url) as (_, ids),
    ):
        wait_live(server.url, ids)
        proxy.cut(5.0)
        time.sleep(MISFIRE_BY_S)
        assert live_count(server.url, ids) == len(ids)


def test_stopped_process_ends_nothing(db_target: DatabaseTarget, tmp_path: Path) -> None:
    """SIGSTOP for 5 s (a process paused, or a long stall of the whole host): nothing ends."""
    with monitor(db_target, tmp_path) as server, agent_process(server.url) as (child, ids):
        wait_live(server.url, ids)
        os.kill(child.pid, signal.SIGSTOP)
        try:
            time.sleep(5.0)
        finally:
            os.kill(child.pid, signal.SIGCONT)
        time.sleep(MISFIRE_BY_S)
        assert live_count(server.url, ids) == len(ids)


def test_a_lost_process_that_comes_back_is_live_again(db_target: DatabaseTarget, tmp_path: Path) -> None:
    """A cut longer than the grace: declared lost; once the agent reaches the server again, revived."""
    with (
        monitor(db_target, tmp_path, SESSION_MONITOR_PROCESS_LOST_AFTER_S="3") as server,
        CuttingProxy(server.port) as proxy,
        agent_process(proxy.url, count=5) as (_, ids),
    ):
        wait_live(server.url, ids)
        proxy.cut(8.0)
        wait_until(lambda: live_count(server.url, ids) == 0, timeout_s=8.0, interval_s=0.1)
        assert {s["end_reason"] for s in sessions_by_id(server.url, ids).values()} == {"process_lost"}
        wait_until(lambda: live_count(server.url, ids) == len(ids), timeout_s=20.0, interval_s=0.2)
        rows = sessions_by_id(server.url, ids).values()
        assert {(s["state"], s["current_task"]) for s in rows} == {("running", "crunching")}


def test_an_agent_that_failed_over_to_another_replica_is_left_alone(pg_database: str, tmp_path: Path) -> None:
    """Replica A sees the agent's long-poll drop and never hears from it again; the agent syncs on replica B.

    A decides from the shared ``agents.last_seen``, which B's syncs move: nothing ends.
    """
    cluster = Cluster(pg_database, tmp_path, 2).start()
    try:
        first, second = cluster.replicas
        with CuttingProxy(first.port) as proxy, agent_process(f"{proxy.url},{second.url}") as (_, ids):
            wait_live(second.url, ids)
            proxy.cut(3600.0)  # the way to A is gone for good; the agent moves to B
            time.sleep(MISFIRE_BY_S)
            assert live_count(first.url, ids) == len(ids)
            assert "process_lost" not in (tmp_path / "replica-0.log").read_text()
    finally:
        cluster.stop()
