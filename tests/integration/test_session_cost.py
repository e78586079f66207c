"""Session cost and leftovers through the agent protocol, on SQLite and the real PostgreSQL.

An agent's sync carries each session's ``cost`` and the process's ``leftovers``; session rows
(``GET /sessions``, ``GET /sessions/{id}``, both renderers), ``GET /agents`` and ``/metrics`` show them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from tests.conftest import FakeClock

AGENT = "agent-cost0001"


def _cost(clock: FakeClock, loop_s: float, **extra: Any) -> dict[str, Any]:
    cost: dict[str, Any] = {
        "loop_seconds_total": loop_s,
        "loop_seconds_1m": loop_s / 2,
        "pool_thread_seconds": 0.25,
        "callbacks_total": 17,
        "slowest_callback": {"qualname": "app.on_click", "duration_s": 2.0},
        "periodic_callbacks": 1,
        "doc_models": 87,
        "doc_data_bytes": 200_000_000,
        "threads_alive": 2,
        "pool_jobs": 0,
        "pool_cpu_seconds": None,
        "measured_at": clock.now.isoformat(),
    }
    cost.update(extra)
    return cost


def _info(clock: FakeClock, leftovers: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "host": "web-1",
        "pid": 4242,
        "started_at": (clock.now - timedelta(hours=1)).isoformat(),
        "leftovers": leftovers or [],
    }


def _session(clock: FakeClock, sid: str, cost: dict[str, Any] | None, status: str = "idle") -> dict[str, Any]:
    body: dict[str, Any] = {"session_id": sid, "app_name": "app", "status": status, "started_at": clock.now.isoformat()}
    if cost is not None:
        body["cost"] = cost
    return body


async def _sync(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post(f"/agents/{AGENT}/sync", json=body)


async def test_cost_is_stored_listed_and_kept_by_a_sync_without_one(client: httpx.AsyncClient, clock: FakeClock):
    body = {"agent": _info(clock), "full": True, "sessions": [_session(clock, "s1", _cost(clock, 4.5))]}
    assert (await _sync(client, body)).status_code == 200
    row = (await client.get("/sessions/s1")).json()
    assert row["cost"]["loop_seconds_total"] == 4.5
    assert row["cost"]["slowest_callback"] == {"qualname": "app.on_click", "duration_s": 2.0}
    assert row["cost"]["doc_data_bytes"] == 200_000_000
    listed = (await client.get("/sessions")).json()["sessions"]
    assert [r["cost"] for r in listed] == [row["cost"]]

    # A status change sent before the next measurement carries no cost: the stored one stays.
    body = {"agent": _info(clock), "sessions": [_session(clock, "s1", None, status="running")]}
    assert (await _sync(client, body)).status_code == 200
    row = (await client.get("/sessions/s1")).json()
    assert row["status"] == "running" and row["cost"]["loop_seconds_total"] == 4.5

    body = {"agent": _info(clock), "sessions": [_session(clock, "s1", _cost(clock, 9.0))]}
    assert (await _sync(client, body)).status_code == 200
    assert (await client.get("/sessions/s1")).json()["cost"]["loop_seconds_total"] == 9.0


async def test_a_session_never_measured_has_no_cost(client: httpx.AsyncClient, clock: FakeClock):
    body = {"agent": _info(clock), "full": True, "sessions": [_session(clock, "s2", None)]}
    assert (await _sync(client, body)).status_code == 200
    assert (await client.get("/sessions/s2")).json()["cost"] is None
    assert (await client.get("/sessions")).json()["sessions"][0]["cost"] is None


async def test_leftovers_on_the_agent_and_in_metrics(client: httpx.AsyncClient, clock: FakeClock):
    leftovers = [
        {
            "session_id": "gone-1",
            "ended_at": clock.now.isoformat(),
            "kind": "thread",
            "name": "Thread-7 (crunch)",
            "function": "app.crunch",
        },
        {
            "session_id": "gone-1",
            "ended_at": clock.now.isoformat(),
            "kind": "periodic_callback",
            "name": "periodic callback",
            "function": "app.refresh",
        },
    ]
    assert (await _sync(client, {"agent": _info(clock, leftovers), "full": True})).status_code == 200
    agent = (await client.get("/agents")).json()["agents"][0]
    assert [(x["kind"], x["function"]) for x in agent["leftovers"]] == [
        ("thread", "app.crunch"),
        ("periodic_callback", "app.refresh"),
    ]
    metrics = (await client.get("/metrics")).text
    assert 'session_monitor_leftovers{kind="thread"} 1.0' in metrics
    assert 'session_monitor_leftovers{kind="periodic_callback"} 1.0' in metrics
    assert 'session_monitor_leftovers{kind="pool_job"} 0.0' in metrics

    # Gone from the next report: gone from the agent and the gauge.
    assert (await _sync(client, {"agent": _info(clock), "full": True})).status_code == 200
    assert (await client.get("/agents")).json()["agents"][0]["leftovers"] == []
    assert 'session_monitor_leftovers{kind="thread"} 0.0' in (await client.get("/metrics")).text


async def test_bad_cost_and_leftovers_are_refused_with_the_field_named(client: httpx.AsyncClient, clock: FakeClock):
    bad_name = _cost(clock, 1.0, slowest_callback={"qualname": "x" * 201, "duration_s": 1.0})
    response = await _sync(client, {"agent": _info(clock), "sessions": [_session(clock, "s3", bad_name)]})
    assert response.status_code == 422 and "qualname" in response.text
    negative = _cost(clock, -1.0)
    response = await _sync(client, {"agent": _info(clock), "sessions": [_session(clock, "s3", negative)]})
    assert response.status_code == 422 and "loop_seconds_total" in response.text
    control = {
        "session_id": "gone",
        "ended_at": clock.now.isoformat(),
        "kind": "thread",
        "name": "t\x1b[31m",
        "function": "f",
    }
    response = await _sync(client, {"agent": _info(clock, [control])})
    assert response.status_code == 422 and "name" in response.text
    many = [{**control, "name": f"t{i}"} for i in range(101)]
    response = await _sync(client, {"agent": _info(clock, many)})
    assert response.status_code == 422 and "leftovers" in response.text
    assert (await client.get("/sessions/s3")).status_code == 404
