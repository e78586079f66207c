"""Several ``session-monitor serve`` replicas on one PostgreSQL: cross-replica kills, one reaper, failover.

Every replica is a real subprocess on its own loopback port; they share the run's PostgreSQL
database, in a schema of the test's own. Agents are real :class:`Agent` objects in this process.
Latency figures belong to ``benchmarks/``; the bounds here are generous and only say "it arrived".
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from session_monitor.client.agent import Agent, SessionRecord
from session_monitor.client.config import ClientConfig
from session_monitor.server.commands import CommandHub
from session_monitor.server.coordination import PgCoordinator, channel_name, payloads
from tests.helpers import ServerProcess, wait_until
from tests.integration.test_api import parse_metrics, value
from tests.unit.server.test_reaper import eventually

pytestmark = pytest.mark.timeout(90)

ARRIVAL_BOUND_S = 5.0
"""A kill must reach its agent well inside this (the long-poll is held 20 s, syncs are 60 s apart)."""


class Cluster:
    """Replicas sharing one database schema; started together, stopped (or SIGKILLed) by their own PIDs."""

    def __init__(self, pg_url: str, tmp_path: Path, count: int, **settings: str) -> None:
        env = {
            "SESSION_MONITOR_DATABASE_URL": pg_url,
            "SESSION_MONITOR_DATABASE_SCHEMA": f"r_{uuid.uuid4().hex[:12]}",
            **{f"SESSION_MONITOR_{name.upper()}": value for name, value in settings.items()},
        }
        self.replicas = [ServerProcess(env, log_path=tmp_path / f"replica-{i}.log") for i in range(count)]

    def start(self) -> Cluster:
        # Together, as a service manager would: the schema upgrade is serialised by an advisory lock.
        with ThreadPoolExecutor(len(self.replicas)) as pool:
            list(pool.map(lambda r: r.start(timeout_s=60), self.replicas))
        return self

    def stop(self) -> None:
        for replica in self.replicas:
            replica.stop()

    def alive(self) -> list[ServerProcess]:
        return [r for r in self.replicas if r.proc is not None and r.proc.poll() is None]


@pytest.fixture
def cluster_factory(pg_database: str, tmp_path: Path) -> Iterator[Any]:
    made: list[Cluster] = []

    def make(count: int, **settings: str) -> Cluster:
        cluster = Cluster(pg_database, tmp_path, count, **settings)
        made.append(cluster)
        return cluster.start()

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        agent.stop(timeout_s=3.0)


def metric(url: str, name: str, **labels: str) -> float:
    """One sample of the server's ``/metrics`` (0 when absent)."""
    return value(parse_metrics(httpx.get(f"{url}/metrics", timeout=5).text), name, **labels) or 0.0


def expired_count(url: str) -> float:
    return metric(url, "session_monitor_sessions_ended_total", reason="expired")


def live_sessions(url: str) -> dict[str, dict[str, Any]]:
    rows = httpx.get(f"{url}/sessions", timeout=5).json()["sessions"]
    return {row["session_id"]: row for row in rows}


def start_agent(agents: list[Agent], *urls: str) -> Agent:
    agent = Agent(
        ClientConfig(
            server_url=urls[0],
            fallback_urls=urls[1:],
            flush_delay_s=0.02,
            long_poll_s=20.0,
            request_timeout_s=3.0,
        )
    )
    agents.append(agent)
    return agent


class Kills:
    """Kill reasons received per session, with the time each arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, tuple[str | None, float]] = {}

    def handler(self, session_id: str) -> Any:
        def on_kill(reason: str | None) -> None:
            with self.lock:
                self.received[session_id] = (reason, time.monotonic())

        return on_kill

    def reason(self, session_id: str) -> str | None:
        with self.lock:
            return self.received.get(session_id, (None, 0.0))[0]


def track(agent: Agent, kills: Kills, *session_ids: str) -> None:
    for sid in session_ids:
        agent.track(SessionRecord(sid, "replicated", "alice", started_at=datetime.now(UTC)), kills.handler(sid))


def kill(url: str, session_id: str, reason: str) -> None:
    response = httpx.post(f"{url}/sessions/{session_id}/kill", json={"reason": reason}, timeout=5)
    assert response.status_code == 200, response.text


def test_kill_on_one_replica_reaches_agent_polling_another(cluster_factory: Any, agents: list[Agent]) -> None:
    # Syncs 60 s apart: only the long-poll, woken through PostgreSQL NOTIFY, can bring the kill in time.
    a, b = cluster_factory(2, sync_interval_s="60").replicas
    agent = start_agent(agents, b.url)
    kills = Kills()
    track(agent, kills, "s-1", "s-2")
    # One database: replica A lists what the agent registered on B.
    wait_until(lambda: set(live_sessions(a.url)) == {"s-1", "s-2"})

    kill(a.url, "s-1", "from replica A")
    wait_until(lambda: kills.reason("s-1") == "from replica A", timeout_s=ARRIVAL_BOUND_S)
    assert kills.reason("s-2") is None
    assert metric(b.url, "session_monitor_replica_wakeups_total") >= 1
    # A skips its own notification (its local long-polls were woken directly).
    assert metric(a.url, "session_monitor_replica_wakeups_total") == 0

    kill(b.url, "s-2", "from replica B")
    wait_until(lambda: kills.reason("s-2") == "from replica B", timeout_s=ARRIVAL_BOUND_S)

    # The audit log is whole, whichever replica took each kill and whichever one is asked.
    for replica in (a, b):
        entries = httpx.get(f"{replica.url}/audit", params={"action": "kill"}, timeout=5).json()["entries"]
        assert {(e["target"], e["detail"]["reason"]) for e in entries} == {
            ("s-1", "from replica A"),
            ("s-2", "from replica B"),
        }


def test_one_replica_reaps_and_another_takes_over_when_it_dies(cluster_factory: Any) -> None:
    cluster = cluster_factory(3, reaper_interval_s="0.2", expire_after_s="1", stale_after_s="0.5")
    replicas = cluster.replicas

    def leaders(among: list[ServerProcess]) -> list[ServerProcess]:
        return [r for r in among if metric(r.url, "session_monitor_reaper_leader") == 1]

    wait_until(
        lambda: (
            len(leaders(replicas)) == 1 and metric(leaders(replicas)[0].url, "session_monitor_reaper_passes_total") >= 5
        )
    )
    (leader,) = leaders(replicas)
    others = [r for r in replicas if r is not leader]
    # Several intervals went by: every one of them was the leader's alone.
    assert [metric(r.url, "session_monitor_reaper_passes_total") for r in others] == [0, 0]

    # Silent sessions registered through every replica are expired once, by the leader.
    created = [
        httpx.post(f"{r.url}/sessions", json={"app_name": "silent", "user_id": None}, timeout=5).json()["session_id"]
        for r in replicas
    ]
    wait_until(lambda: not set(created) & set(live_sessions(others[0].url)))
    assert expired_count(leader.url) == len(created)
    assert [expired_count(r.url) for r in others] == [0, 0]

    leader.kill()  # SIGKILL: PostgreSQL drops its connection, and the lock with it
    wait_until(lambda: len(leaders(others)) == 1, timeout_s=20)
    (successor,) = leaders(others)
    bystander = next(r for r in others if r is not successor)
    late = httpx.post(f"{bystander.url}/sessions", json={"app_name": "silent", "user_id": None}, timeout=5)
    late_id = late.json()["session_id"]
    wait_until(lambda: late_id not in live_sessions(bystander.url))
    assert expired_count(successor.url) == 1
    assert metric(bystander.url, "session_monitor_reaper_passes_total") == 0


def test_agent_fails_over_when_its_replica_is_sigkilled(cluster_factory: Any, agents: list[Agent]) -> None:
    # Sessions expire after 3 s without a heartbeat: losing the agent for longer would show.
    a, b = cluster_factory(2, sync_interval_s="0.5", expire_after_s="3", reaper_interval_s="0.3").replicas
    agent = start_agent(agents, a.url, b.url)
    kills = Kills()
    track(agent, kills, "f-1", "f-2", "f-3")
    wait_until(lambda: set(live_sessions(b.url)) == {"f-1", "f-2", "f-3"})
    assert agent.server_url == a.url

    a.kill()
    past_expiry = datetime.now(UTC) + timedelta(seconds=4)
    wait_until(lambda: agent.server_url == b.url and agent.online)
    # Heartbeats now reach B: every session is still live, and beating, past the expiry window after A died.
    wait_until(
        lambda: (
            (rows := live_sessions(b.url)).keys() == {"f-1", "f-2", "f-3"}
            and all(datetime.fromisoformat(r["last_heartbeat"]) > past_expiry for r in rows.values())
        ),
        timeout_s=20,
    )
    history = httpx.get(f"{b.url}/history", timeout=5).json()["sessions"]
    assert not [row for row in history if row["session_id"].startswith("f-")]

    kill(b.url, "f-2", "after failover")
    wait_until(lambda: kills.reason("f-2") == "after failover", timeout_s=ARRIVAL_BOUND_S)
    assert kills.reason("f-1") is None and kills.reason("f-3") is None


# -- the coordination connection itself (in process, on the real PostgreSQL) ---------------------------------------


def test_notification_payloads_stay_under_the_postgresql_limit() -> None:
    ids = [f"agent-{i:06d}-{'x' * 40}" for i in range(400)]
    messages = payloads("sender", ids)
    assert len(messages) > 1
    assert all(len(m.encode()) < 8000 and m.startswith("sender ") for m in messages)
    assert [i for m in messages for i in m.split(" ", 1)[1].split(",")] == ids
    assert channel_name(None) == "sm_commands"
    assert channel_name("tenant_a") != channel_name("tenant_b")


async def _terminate_backend(pg_url: str, pid: int) -> None:
    """What a PostgreSQL restart does to a connection: the server ends it."""
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(pg_url)
    try:
        await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def reconnected(coordinator: PgCoordinator) -> bool:
    return coordinator.connects >= 2


async def test_coordinator_reconnects_wakes_everyone_and_keeps_listening(pg_database: str) -> None:
    schema = f"c_{uuid.uuid4().hex[:12]}"
    hub_1, hub_2 = CommandHub(), CommandHub()
    one, two = PgCoordinator(pg_database, hub_1, schema=schema), PgCoordinator(pg_database, hub_2, schema=schema)
    await one.start()
    await two.start()
    try:
        waiting = hub_1.subscribe("agent-1")
        hub_2.notify(["agent-1"])  # a kill committed on replica two
        await asyncio.wait_for(waiting.wait(), 5)
        waiting.clear()

        other = hub_1.subscribe("agent-2")  # no kill for this one: only the reconnect wakes it
        await _terminate_backend(pg_database, one._conn.get_server_pid())
        await eventually(lambda: reconnected(one))
        await asyncio.wait_for(other.wait(), 5)
        assert waiting.is_set()  # every long-poll re-reads: notifications may have been missed meanwhile

        waiting.clear()
        hub_2.notify(["agent-1"])  # LISTEN is back on the new connection
        await asyncio.wait_for(waiting.wait(), 5)
    finally:
        await one.close()
        await two.close()


async def test_reaper_lock_has_one_holder_and_moves_when_its_connection_ends(pg_database: str) -> None:
    schema = f"c_{uuid.uuid4().hex[:12]}"
    first = PgCoordinator(pg_database, CommandHub(), schema=schema)
    second = PgCoordinator(pg_database, CommandHub(), schema=schema)
    elsewhere = PgCoordinator(pg_database, CommandHub(), schema=f"c_{uuid.uuid4().hex[:12]}")
    for coordinator in (first, second, elsewhere):
        await coordinator.start()
    try:
        assert await first.try_lead()
        assert not await second.try_lead()
        assert await first.try_lead()  # held, not taken again
        assert await elsewhere.try_lead()  # another schema has a reaper of its own

        await _terminate_backend(pg_database, first._conn.get_server_pid())
        await eventually(lambda: reconnected(first))
        assert not first.leading
        # The lock went with the old connection: whoever asks first now gets it, and only one does.
        winners = [await second.try_lead(), await first.try_lead()]
        assert winners == [True, False]
    finally:
        for coordinator in (first, second, elsewhere):
            await coordinator.close()


def test_workers_of_one_serve_share_kills(pg_database: str, tmp_path: Path, agents: list[Agent]) -> None:
    """``serve --workers 2``: the kernel spreads connections over both processes; every kill still arrives."""
    env = {
        "SESSION_MONITOR_DATABASE_URL": pg_database,
        "SESSION_MONITOR_DATABASE_SCHEMA": f"w_{uuid.uuid4().hex[:12]}",
        "SESSION_MONITOR_SYNC_INTERVAL_S": "60",
    }
    server = ServerProcess(env, args=("--workers", "2"), log_path=tmp_path / "workers.log").start(timeout_s=60)
    try:
        agent = start_agent(agents, server.url)
        kills = Kills()
        ids = [f"w-{i}" for i in range(6)]
        track(agent, kills, *ids)
        wait_until(lambda: set(live_sessions(server.url)) == set(ids))
        for sid in ids:
            with httpx.Client(timeout=5) as fresh:  # a new connection each time: either worker may take it
                fresh.post(f"{server.url}/sessions/{sid}/kill", json={"reason": sid}).raise_for_status()

            def arrived(sid: str = sid) -> bool:
                return kills.reason(sid) == sid

            wait_until(arrived, timeout_s=ARRIVAL_BOUND_S)
        agent.stop(timeout_s=3.0)  # before the server: its held long-poll would make the shutdown wait
    finally:
        server.stop()


def test_workers_need_postgresql(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "session_monitor", "serve", "--workers", "2", "--dashboard-port", "0",
         "--database-url", f"sqlite:///{tmp_path / 'one.sqlite3'}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--workers above 1 needs PostgreSQL" in done.stderr
