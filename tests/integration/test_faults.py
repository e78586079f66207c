"""Faults and load against a real ``session-monitor serve`` process, on SQLite and PostgreSQL.

- SIGKILL in the middle of a write load: nothing the server acknowledged (2xx) is lost after a restart.
- 200 concurrent writers beside two readers listing a few thousand sessions: no error, every write visible.

No timing assertions here: throughput and latency are the benchmark's (benchmarks/server_throughput.py).
No coverage either (``no_cover``, servers started with ``measure_coverage=False``): these tests are about volume
and crashes on code paths the other tests cover, and coverage's tracer would make them about 2x slower.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from session_monitor.store import Database, Store
from tests.conftest import DatabaseTarget
from tests.helpers import ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.no_cover]

KILL_WRITERS = 50
KILL_OPS_PER_WRITER = 80
"""Each writer alternates status updates and heartbeats; the kill lands well before all are done."""
KILL_AFTER_ACKS = 1_000

LOAD_WRITERS = 200
LOAD_ROUNDS = 2
"""A heartbeat and a status update per round, then the final status: 1,000 concurrent writes after the 200 sign-ups."""
SEEDED_SESSIONS = 2_000


_SSL_CONTEXT = ssl.create_default_context()
"""Shared by the many clients below: building one per client costs more than the requests (plain HTTP anyway)."""


def _own_client(url: str, timeout_s: float) -> httpx.AsyncClient:
    """One client (one connection) per simulated process, as in production.

    One ``AsyncClient`` shared by 200 tasks spends most of its time in httpcore's pool bookkeeping
    (about 4x slower here), which would make the test slow without loading the server more.
    """
    return httpx.AsyncClient(base_url=url, timeout=timeout_s, verify=_SSL_CONTEXT)


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _live_sessions(url: str, **params: str) -> dict[str, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.get("/sessions", params=params)
        response.raise_for_status()
        return {s["session_id"]: s for s in response.json()["sessions"]}


# -- SIGKILL mid-load ---------------------------------------------------------------------------------------------


@dataclass
class WriterLog:
    """What one writer sent, and which of it the server acknowledged."""

    session_id: str | None = None
    acked_tasks: list[str] = field(default_factory=list)
    inflight_task: str | None = None
    last_acked_sent_at: datetime | None = None
    cut_off: BaseException | None = None
    bad_answers: list[str] = field(default_factory=list)


async def _kill_writer(client: httpx.AsyncClient, index: int, log: WriterLog, on_ack: Any, app_name: str) -> None:
    try:
        sent_at = datetime.now(UTC)
        response = await client.post("/sessions", json={"app_name": app_name, "user_id": f"user-{index}"})
        if not response.is_success:
            log.bad_answers.append(f"POST /sessions -> {response.status_code} {response.text[:200]}")
            return
        log.session_id = response.json()["session_id"]
        log.last_acked_sent_at = sent_at
        on_ack()
        for op in range(KILL_OPS_PER_WRITER):
            path = f"/sessions/{log.session_id}"
            sent_at = datetime.now(UTC)
            if op % 2 == 0:
                task = f"w{index}-t{op:03d}-{uuid.uuid4().hex[:6]}"
                log.inflight_task = task
                response = await client.put(f"{path}/status", json={"status": "running", "current_task": task})
            else:
                task = None
                response = await client.post(f"{path}/heartbeat")
            if not response.is_success:
                log.bad_answers.append(
                    f"{response.request.method} {response.request.url.path} -> "
                    f"{response.status_code} {response.text[:200]}"
                )
                return
            if task is not None:
                log.acked_tasks.append(task)
                log.inflight_task = None
            log.last_acked_sent_at = sent_at
            on_ack()
    except httpx.TransportError as exc:  # the kill: the request may or may not have landed
        log.cut_off = exc


async def test_sigkill_mid_load_loses_no_acknowledged_write(db_target: DatabaseTarget, tmp_path: Path) -> None:
    app_name = f"faults-{uuid.uuid4().hex[:8]}"
    server = ServerProcess(db_target.env(), log_path=tmp_path / "server-1.log", measure_coverage=False).start()
    logs = [WriterLog() for _ in range(KILL_WRITERS)]
    acks = [0]
    killed_at_acks: list[int] = []

    def on_ack() -> None:
        acks[0] += 1
        if acks[0] == KILL_AFTER_ACKS:
            # Synchronous on purpose: the loop stops here, so every other writer's request is left in flight.
            server.kill()
            killed_at_acks.append(acks[0])

    try:

        async def writer(index: int, log: WriterLog) -> None:
            async with _own_client(server.url, 30) as client:
                await _kill_writer(client, index, log, on_ack, app_name)

        await asyncio.wait_for(asyncio.gather(*(writer(i, log) for i, log in enumerate(logs))), timeout=60)
    finally:
        server.kill()

    assert killed_at_acks == [KILL_AFTER_ACKS], f"the load ended after {acks[0]} acks, before the kill"
    assert [b for log in logs for b in log.bad_answers] == []
    cut_off = [log for log in logs if log.cut_off is not None]
    assert len(cut_off) >= KILL_WRITERS // 2, "the kill should have cut most writers off mid-load"
    acked = [log for log in logs if log.session_id is not None]
    assert acked, "no session was acknowledged before the kill"

    restarted = ServerProcess(db_target.env(), log_path=tmp_path / "server-2.log", measure_coverage=False).start()
    try:
        stored = await _live_sessions(restarted.url, app=app_name)
    finally:
        restarted.stop()

    problems: list[str] = []
    for log in acked:
        assert log.session_id is not None
        row = stored.get(log.session_id)
        if row is None:
            problems.append(f"{log.session_id}: acknowledged session lost")
            continue
        if row["ended_at"] is not None:
            problems.append(f"{log.session_id}: ended ({row['end_reason']}) though nobody ended it")
        # The last acknowledged task, or the one in flight at the kill (it may have landed).
        allowed: set[str | None] = {log.acked_tasks[-1] if log.acked_tasks else None}
        if log.inflight_task is not None:
            allowed.add(log.inflight_task)
        if row["current_task"] not in allowed:
            problems.append(f"{log.session_id}: current_task {row['current_task']!r}, expected one of {allowed}")
        assert log.last_acked_sent_at is not None
        if _parse_time(row["last_heartbeat"]) < log.last_acked_sent_at:
            problems.append(
                f"{log.session_id}: last_heartbeat {row['last_heartbeat']} older than the last acknowledged "
                f"write sent at {log.last_acked_sent_at.isoformat()}"
            )
    assert problems == []
    # Sessions whose registration was cut off may have landed; no other session may appear.
    assert len(acked) <= len(stored) <= KILL_WRITERS


# -- 200 concurrent writers beside readers ------------------------------------------------------------------------


async def _seed(db_target: DatabaseTarget, count: int) -> None:
    """Store sessions in bulk through the store's own write path, before the server starts."""
    db = Database(db_target.url, schema=db_target.schema)
    try:
        await db.upgrade()
        store = Store(db, stale_after_s=120)
        await asyncio.gather(
            *(store.create_session("seeded", f"u{i}", session_id=f"seed-{i:05d}") for i in range(count))
        )
    finally:
        await db.close()


@dataclass
class LoadLog:
    errors: list[str] = field(default_factory=list)
    reads: int = 0
    registered: set[str] = field(default_factory=set)
    final: dict[str, str] = field(default_factory=dict)


def _check(log: LoadLog, response: httpx.Response) -> bool:
    if response.is_success:
        return True
    log.errors.append(
        f"{response.request.method} {response.request.url.path} -> {response.status_code} {response.text[:200]}"
    )
    return False


async def _load_writer(
    client: httpx.AsyncClient, index: int, log: LoadLog, app_name: str, registered: asyncio.Barrier
) -> None:
    try:
        response = await client.post("/sessions", json={"app_name": app_name, "user_id": f"w{index}"})
        if not _check(log, response):
            await registered.abort()
            return
        session_id = response.json()["session_id"]
        log.registered.add(session_id)
        await registered.wait()  # all 200 write at the same time from here on
        for rnd in range(LOAD_ROUNDS):
            response = await client.post(f"/sessions/{session_id}/heartbeat")
            if not _check(log, response):
                return
            if response.json() != {"kill_requested": False}:
                log.errors.append(f"heartbeat answer {response.json()}")
            task = f"w{index}-r{rnd}"
            response = await client.put(
                f"/sessions/{session_id}/status", json={"status": "running", "current_task": task}
            )
            if not _check(log, response):
                return
        final_task = f"w{index}-done"
        response = await client.put(
            f"/sessions/{session_id}/status", json={"status": "idle", "current_task": final_task}
        )
        if _check(log, response):
            log.final[session_id] = final_task
    except (httpx.HTTPError, asyncio.BrokenBarrierError) as exc:
        log.errors.append(f"writer {index}: {type(exc).__name__}: {exc}")
        await registered.abort()


async def _reader(client: httpx.AsyncClient, log: LoadLog, done: asyncio.Event) -> None:
    try:
        while not done.is_set() or log.reads < 2:
            acknowledged = set(log.registered)
            response = await client.get("/sessions")
            if not _check(log, response):
                return
            listed = {s["session_id"] for s in response.json()["sessions"]}
            if len(listed) < SEEDED_SESSIONS + len(acknowledged):
                log.errors.append(f"listing showed {len(listed)} sessions, fewer than seeded + registered")
            if missing := acknowledged - listed:
                log.errors.append(f"listing misses {len(missing)} sessions registered before it was asked")
            log.reads += 1
    except httpx.HTTPError as exc:
        log.errors.append(f"reader: {type(exc).__name__}: {exc}")


async def test_200_concurrent_writers_beside_readers(db_target: DatabaseTarget, tmp_path: Path) -> None:
    await _seed(db_target, SEEDED_SESSIONS)
    app_name = f"load-{uuid.uuid4().hex[:8]}"
    server = ServerProcess(db_target.env(), log_path=tmp_path / "server.log", measure_coverage=False).start()
    log = LoadLog()
    done = asyncio.Event()
    try:
        registered = asyncio.Barrier(LOAD_WRITERS)

        async def writer(index: int) -> None:
            async with _own_client(server.url, 60) as client:
                await _load_writer(client, index, log, app_name, registered)

        async def reader() -> None:
            async with _own_client(server.url, 60) as client:
                await _reader(client, log, done)

        readers = [asyncio.create_task(reader()) for _ in range(2)]
        try:
            await asyncio.wait_for(asyncio.gather(*(writer(i) for i in range(LOAD_WRITERS))), timeout=75)
        finally:
            done.set()
            await asyncio.wait_for(asyncio.gather(*readers), timeout=30)
        stored = await _live_sessions(server.url, app=app_name)
        seeded = await _live_sessions(server.url, app="seeded")
    finally:
        server.stop()

    assert log.errors == []
    assert log.reads >= 4
    assert len(log.final) == LOAD_WRITERS
    assert len(seeded) == SEEDED_SESSIONS
    assert set(stored) == set(log.final)
    wrong = {
        sid: (row["status"], row["current_task"])
        for sid, row in stored.items()
        if (row["status"], row["current_task"]) != ("idle", log.final[sid])
    }
    assert wrong == {}
