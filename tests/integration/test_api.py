"""Every REST endpoint through the ASGI app, on SQLite and on the real PostgreSQL.

Time is a ``FakeClock`` the tests move forward: staleness, durations, task
timing and cleanup are checked without sleeping.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from session_monitor import __version__
from session_monitor.protocol import API_VERSION
from tests.conftest import FakeClock
from tests.helpers import PROTOTYPE_ROW_FIELDS, get, live, live_ids

ACTOR_HEADER = "X-Session-Monitor-Actor"


def ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


async def register(client: httpx.AsyncClient, app_name: str = "app", user_id: str | None = None, **extra: Any) -> str:
    response = await client.post("/sessions", json={"app_name": app_name, "user_id": user_id, **extra})
    assert response.status_code == 200, response.text
    session_id = response.json()["session_id"]
    assert isinstance(session_id, str) and session_id
    return session_id


async def history(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/history", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def audit(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get("/audit", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def set_status(client: httpx.AsyncClient, session_id: str, status: str, task: str | None) -> None:
    response = await client.put(f"/sessions/{session_id}/status", json={"status": status, "current_task": task})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "updated"}


# -- the routes ------------------------------------------------------------------------------------

PROTOTYPE_OPERATIONS = {
    ("POST", "/sessions"): "create_session_sessions_post",
    ("GET", "/sessions"): "list_sessions_sessions_get",
    ("DELETE", "/sessions/stale"): "cleanup_stale_sessions_sessions_stale_delete",
    ("DELETE", "/sessions/{session_id}"): "delete_session_sessions__session_id__delete",
    ("POST", "/sessions/{session_id}/heartbeat"): "heartbeat_sessions__session_id__heartbeat_post",
    ("PUT", "/sessions/{session_id}/status"): "update_status_sessions__session_id__status_put",
    ("POST", "/sessions/{session_id}/kill"): "kill_session_sessions__session_id__kill_post",
    ("POST", "/apps/{app_name}/kill-all"): "kill_all_sessions_apps__app_name__kill_all_post",
}
"""The prototype's endpoints and their OpenAPI operation ids (generated clients call them by these names)."""


async def test_the_prototypes_endpoints_keep_their_operation_ids(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operations = {
        (m.upper(), path): op["operationId"] for path, item in spec["paths"].items() for m, op in item.items()
    }
    assert {key: operations.get(key) for key in PROTOTYPE_OPERATIONS} == PROTOTYPE_OPERATIONS
    assert {spec["paths"][path][m.lower()]["tags"][0] for m, path in PROTOTYPE_OPERATIONS} == {"sessions"}


async def test_delete_stale_is_the_cleanup_not_the_end_of_a_session_called_stale(client: httpx.AsyncClient) -> None:
    # Both routers hold DELETE /sessions/...: the operators' is mounted first, so "stale" is never a session id.
    response = await client.delete("/sessions/stale")
    assert (response.status_code, response.json()) == (200, {"deleted_count": 0})
    assert (await client.delete("/sessions/not-stale")).status_code == 404


# -- POST /sessions -------------------------------------------------------------------------------


async def test_register_without_user(client: httpx.AsyncClient, clock: FakeClock) -> None:
    session_id = await register(client, "task_runner", None)
    row = await get(client, session_id)
    assert row.keys() >= PROTOTYPE_ROW_FIELDS
    assert row["session_id"] == session_id
    assert row["app_name"] == "task_runner"
    assert row["user_id"] is None
    assert row["host"] is None and row["pid"] is None
    assert ts(row["start_time"]) == clock.now
    assert ts(row["last_heartbeat"]) == clock.now
    assert row["status"] == "idle" and row["state"] == "idle"
    assert row["current_task"] is None
    assert row["is_stale"] is False and row["kill_requested"] is False
    assert row["duration_seconds"] == 0
    assert row["ended_at"] is None and row["end_reason"] is None


async def test_register_with_user_host_and_pid(client: httpx.AsyncClient) -> None:
    session_id = await register(client, "pool_app", "alice", host="worker-1", pid=4242)
    row = await get(client, session_id)
    assert (row["app_name"], row["user_id"], row["host"], row["pid"]) == ("pool_app", "alice", "worker-1", 4242)


async def test_register_gives_distinct_ids(client: httpx.AsyncClient) -> None:
    ids = {await register(client) for _ in range(5)}
    assert len(ids) == 5
    assert sorted(await live_ids(client)) == sorted(ids)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"app_name": ""},
        {"app_name": "   "},
        {"app_name": "x" * 201},
        {"app_name": "a\x00b"},
        {"app_name": "a", "pid": -1},
    ],
)
async def test_register_rejects_invalid_bodies(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post("/sessions", json=body)
    assert response.status_code == 422
    assert response.json()["detail"]
    assert (await live(client))["total"] == 0


# -- GET /sessions ----------------------------------------------------------------------------------


async def test_list_computes_duration_and_staleness(client: httpx.AsyncClient, clock: FakeClock) -> None:
    session_id = await register(client, "app")
    clock.advance(seconds=90)
    [row] = (await live(client))["sessions"]
    assert row["session_id"] == session_id
    assert row["duration_seconds"] == 90.0
    assert row["is_stale"] is False and row["state"] == "idle"

    clock.advance(seconds=31)  # 121 s without a heartbeat: past the 120 s default
    [row] = (await live(client))["sessions"]
    assert row["duration_seconds"] == 121.0
    assert row["is_stale"] is True and row["state"] == "stale"
    assert row["status"] == "idle"  # what the session last reported is kept

    response = await client.post(f"/sessions/{session_id}/heartbeat")
    assert response.status_code == 200
    [row] = (await live(client))["sessions"]
    assert row["is_stale"] is False and row["state"] == "idle"
    assert ts(row["last_heartbeat"]) == clock.now
    assert row["duration_seconds"] == 121.0


async def test_list_is_newest_first_with_total(client: httpx.AsyncClient, clock: FakeClock) -> None:
    ids = []
    for _ in range(3):
        ids.append(await register(client))
        clock.advance(seconds=1)
    body = await live(client)
    assert [s["session_id"] for s in body["sessions"]] == ids[::-1]
    assert body["total"] == 3


async def test_list_filters(client: httpx.AsyncClient, clock: FakeClock) -> None:
    a1 = await register(client, "alpha", "alice", host="h1")
    a2 = await register(client, "alpha", "bob", host="h2")
    b1 = await register(client, "beta", "alice", host="h1")
    await set_status(client, a2, "running", "Generating Report")

    assert sorted(await live_ids(client, app="alpha")) == sorted([a1, a2])
    assert await live_ids(client, app="beta") == [b1]
    assert await live_ids(client, app="gamma") == []
    assert sorted(await live_ids(client, user="alice")) == sorted([a1, b1])
    assert await live_ids(client, host="h2") == [a2]
    assert await live_ids(client, app="alpha", user="alice") == [a1]
    assert await live_ids(client, status="running") == [a2]
    assert sorted(await live_ids(client, status="idle")) == sorted([a1, b1])
    assert await live_ids(client, status="stale") == []

    # q: case-insensitive substring of id, app, user, task or host
    assert await live_ids(client, q="REPORT") == [a2]
    assert sorted(await live_ids(client, q="alp")) == sorted([a1, a2])
    assert await live_ids(client, q="bo") == [a2]
    assert await live_ids(client, q=b1[:12]) == [b1]
    assert await live_ids(client, q="nothing-like-this") == []
    # LIKE wildcards are literal characters, not patterns
    assert await live_ids(client, q="%") == []
    assert await live_ids(client, q="_") == []

    # stale: keep a1 beating, let the others fall silent
    clock.advance(seconds=100)
    assert (await client.post(f"/sessions/{a1}/heartbeat")).status_code == 200
    clock.advance(seconds=30)
    assert sorted(await live_ids(client, status="stale")) == sorted([a2, b1])
    assert await live_ids(client, status="idle") == [a1]
    assert await live_ids(client, status="running") == []  # a2 is running but shown as stale
    body = await live(client, status="stale", app="alpha")
    assert [s["session_id"] for s in body["sessions"]] == [a2]
    assert body["sessions"][0]["state"] == "stale" and body["sessions"][0]["status"] == "running"
    assert body["total"] == 1


async def test_list_paging(client: httpx.AsyncClient, clock: FakeClock) -> None:
    ids = []
    for i in range(5):
        ids.append(await register(client, "paged" if i != 2 else "other"))
        clock.advance(seconds=1)
    newest_first = ids[::-1]

    page = await live(client, limit=2)
    assert [s["session_id"] for s in page["sessions"]] == newest_first[:2]
    assert page["total"] == 5
    page = await live(client, limit=2, offset=2)
    assert [s["session_id"] for s in page["sessions"]] == newest_first[2:4]
    assert page["total"] == 5
    page = await live(client, offset=4)
    assert [s["session_id"] for s in page["sessions"]] == newest_first[4:]
    assert page["total"] == 5
    page = await live(client, limit=2, offset=10)
    assert page["sessions"] == [] and page["total"] == 5
    page = await live(client, app="paged", limit=3, offset=1)
    paged = [i for i in newest_first if i != ids[2]]
    assert [s["session_id"] for s in page["sessions"]] == paged[1:4]
    assert page["total"] == 4


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"offset": -1}, {"status": "ended"}, {"status": "bogus"}, {"app": "x" * 201}]
)
async def test_list_rejects_invalid_parameters(client: httpx.AsyncClient, params: dict[str, Any]) -> None:
    response = await client.get("/sessions", params=params)
    assert response.status_code == 422
    assert response.json()["detail"]


# -- GET /sessions/{id} -------------------------------------------------------------------------------


async def test_get_one_live_and_ended(client: httpx.AsyncClient, clock: FakeClock) -> None:
    session_id = await register(client, "app", "carol")
    started = clock.now
    clock.advance(seconds=30)
    row = await get(client, session_id)
    assert row["state"] == "idle" and row["duration_seconds"] == 30.0

    response = await client.delete(f"/sessions/{session_id}", headers={ACTOR_HEADER: "carol"})
    assert response.status_code == 200
    clock.advance(seconds=100)
    row = await get(client, session_id)
    assert row["state"] == "ended"
    assert row["end_reason"] == "closed" and row["ended_by"] == "carol"
    assert ts(row["ended_at"]) == started + timedelta(seconds=30)
    assert row["duration_seconds"] == 30.0  # frozen at the end, not growing with the clock
    assert row["is_stale"] is False


@pytest.mark.parametrize("session_id", ["no-such-session", "bad id!", "x" * 200])
async def test_get_one_unknown_is_404(client: httpx.AsyncClient, session_id: str) -> None:
    response = await client.get(f"/sessions/{quote(session_id, safe='')}")
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


# -- DELETE /sessions/{id} ------------------------------------------------------------------------------


async def test_delete_ends_session_as_closed(client: httpx.AsyncClient, clock: FakeClock) -> None:
    keep = await register(client, "app")
    session_id = await register(client, "app", "dave")
    clock.advance(seconds=5)

    response = await client.delete(f"/sessions/{session_id}")
    assert response.status_code == 200
    assert response.json() == {"status": "deleted"}

    assert await live_ids(client) == [keep]
    ended = await history(client)
    assert ended["total"] == 1
    [row] = ended["sessions"]
    assert row["session_id"] == session_id and row["user_id"] == "dave"
    assert row["end_reason"] == "closed" and row["ended_by"] == "anonymous"
    assert ts(row["ended_at"]) == clock.now
    assert row["duration_seconds"] == 5.0

    second = await client.delete(f"/sessions/{session_id}")
    assert second.status_code == 404
    assert "closed" in second.json()["detail"]
    assert (await history(client))["total"] == 1


async def test_delete_after_kill_ends_as_killed(client: httpx.AsyncClient) -> None:
    session_id = await register(client, "app")
    assert (await client.post(f"/sessions/{session_id}/kill")).status_code == 200
    response = await client.delete(f"/sessions/{session_id}")
    assert response.json() == {"status": "deleted"}
    row = await get(client, session_id)
    assert row["end_reason"] == "killed"
    assert [s["session_id"] for s in (await history(client, reason="killed"))["sessions"]] == [session_id]
    assert (await history(client, reason="closed"))["total"] == 0


async def test_delete_unknown_is_404(client: httpx.AsyncClient) -> None:
    response = await client.delete("/sessions/does-not-exist")
    assert response.status_code == 404
    assert "does-not-exist" in response.json()["detail"]


# -- POST /sessions/{id}/heartbeat ---------------------------------------------------------------------


async def test_heartbeat(client: httpx.AsyncClient, clock: FakeClock) -> None:
    session_id = await register(client)
    clock.advance(seconds=42)
    response = await client.post(f"/sessions/{session_id}/heartbeat")
    assert response.status_code == 200
    assert response.json() == {"kill_requested": False}
    assert ts((await get(client, session_id))["last_heartbeat"]) == clock.now

    assert (await client.post(f"/sessions/{session_id}/kill")).status_code == 200
    response = await client.post(f"/sessions/{session_id}/heartbeat")
    assert response.json() == {"kill_requested": True}
    # the flag stays until the session ends
    assert (await client.post(f"/sessions/{session_id}/heartbeat")).json() == {"kill_requested": True}


async def test_heartbeat_unknown_and_ended_are_404(client: httpx.AsyncClient) -> None:
    assert (await client.post("/sessions/unknown/heartbeat")).status_code == 404
    session_id = await register(client)
    assert (await client.delete(f"/sessions/{session_id}")).status_code == 200
    response = await client.post(f"/sessions/{session_id}/heartbeat")
    assert response.status_code == 404
    assert "ended" in response.json()["detail"]


# -- PUT /sessions/{id}/status -------------------------------------------------------------------------


async def test_status_and_task_timing(client: httpx.AsyncClient, clock: FakeClock) -> None:
    session_id = await register(client)
    row = await get(client, session_id)
    assert row["task_started_at"] is None and row["task_seconds"] is None

    clock.advance(seconds=10)
    first_start = clock.now
    await set_status(client, session_id, "running", "Task A")
    row = await get(client, session_id)
    assert (row["status"], row["state"], row["current_task"]) == ("running", "running", "Task A")
    assert ts(row["task_started_at"]) == first_start
    assert row["task_seconds"] == 0.0
    assert ts(row["last_heartbeat"]) == first_start  # a status update counts as a heartbeat

    clock.advance(seconds=5)
    assert (await get(client, session_id))["task_seconds"] == 5.0

    # the same task reported again keeps its start
    await set_status(client, session_id, "running", "Task A")
    clock.advance(seconds=5)
    row = await get(client, session_id)
    assert ts(row["task_started_at"]) == first_start
    assert row["task_seconds"] == 10.0

    # a new task restarts the timer
    second_start = clock.now
    await set_status(client, session_id, "running", "Task B")
    clock.advance(seconds=3)
    row = await get(client, session_id)
    assert row["current_task"] == "Task B"
    assert ts(row["task_started_at"]) == second_start
    assert row["task_seconds"] == 3.0

    # idle clears it
    await set_status(client, session_id, "idle", None)
    row = await get(client, session_id)
    assert (row["status"], row["state"], row["current_task"]) == ("idle", "idle", None)
    assert row["task_started_at"] is None and row["task_seconds"] is None

    # running the same task again after idle is a new run
    clock.advance(seconds=7)
    third_start = clock.now
    await set_status(client, session_id, "running", "Task B")
    row = await get(client, session_id)
    assert ts(row["task_started_at"]) == third_start and row["task_seconds"] == 0.0


async def test_status_running_without_task_name(client: httpx.AsyncClient, clock: FakeClock) -> None:
    session_id = await register(client)
    start = clock.now
    await set_status(client, session_id, "running", None)
    clock.advance(seconds=4)
    await set_status(client, session_id, "running", None)  # same (unnamed) task
    row = await get(client, session_id)
    assert row["current_task"] is None
    assert ts(row["task_started_at"]) == start and row["task_seconds"] == 4.0
    await set_status(client, session_id, "running", "named now")
    assert ts((await get(client, session_id))["task_started_at"]) == clock.now


async def test_status_unknown_and_ended_are_404(client: httpx.AsyncClient) -> None:
    body = {"status": "running", "current_task": "x"}
    assert (await client.put("/sessions/unknown/status", json=body)).status_code == 404
    session_id = await register(client)
    assert (await client.delete(f"/sessions/{session_id}")).status_code == 200
    response = await client.put(f"/sessions/{session_id}/status", json=body)
    assert response.status_code == 404
    row = await get(client, session_id)
    assert row["status"] == "idle" and row["current_task"] is None


@pytest.mark.parametrize("body", [{}, {"status": ""}, {"status": "Running"}, {"status": "x" * 33}])
async def test_status_rejects_invalid_bodies(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    session_id = await register(client)
    response = await client.put(f"/sessions/{session_id}/status", json=body)
    assert response.status_code == 422
    assert (await get(client, session_id))["status"] == "idle"


# -- POST /sessions/{id}/kill ---------------------------------------------------------------------------


async def test_kill_without_body(client: httpx.AsyncClient, clock: FakeClock) -> None:
    session_id = await register(client, "app")
    other = await register(client, "app")
    response = await client.post(f"/sessions/{session_id}/kill")
    assert response.status_code == 200
    assert response.json() == {"status": "kill_requested"}

    row = await get(client, session_id)
    assert row["kill_requested"] is True
    assert ts(row["kill_requested_at"]) == clock.now
    assert row["kill_requested_by"] == "anonymous"
    assert row["kill_reason"] is None
    assert row["state"] == "idle"  # still live until it ends
    assert (await get(client, other))["kill_requested"] is False

    [entry] = (await audit(client))["entries"]
    assert entry["actor"] == "anonymous"
    assert entry["action"] == "kill"
    assert entry["target"] == session_id
    assert entry["detail"] == {"app_name": "app", "reason": None}
    assert entry["remote_addr"] == "127.0.0.1"
    assert ts(entry["at"]) == clock.now


async def test_kill_with_reason_and_actor(client: httpx.AsyncClient, clock: FakeClock) -> None:
    session_id = await register(client, "reports")
    first_kill = clock.now
    response = await client.post(
        f"/sessions/{session_id}/kill", json={"reason": "maintenance window"}, headers={ACTOR_HEADER: "ops@example"}
    )
    assert response.json() == {"status": "kill_requested"}
    row = await get(client, session_id)
    assert row["kill_reason"] == "maintenance window"
    assert row["kill_requested_by"] == "ops@example"

    # a second kill keeps the first request time but records who asked again
    clock.advance(seconds=60)
    response = await client.post(f"/sessions/{session_id}/kill", json={}, headers={ACTOR_HEADER: "bob"})
    assert response.status_code == 200
    row = await get(client, session_id)
    assert ts(row["kill_requested_at"]) == first_kill
    assert row["kill_requested_by"] == "bob"

    entries = (await audit(client))["entries"]
    assert [(e["actor"], e["action"], e["target"]) for e in entries] == [
        ("bob", "kill", session_id),
        ("ops@example", "kill", session_id),
    ]
    assert entries[1]["detail"] == {"app_name": "reports", "reason": "maintenance window"}
    assert entries[0]["detail"]["reason"] is None


async def test_kill_unknown_and_ended_are_404_and_not_audited(client: httpx.AsyncClient) -> None:
    assert (await client.post("/sessions/unknown/kill")).status_code == 404
    session_id = await register(client)
    assert (await client.delete(f"/sessions/{session_id}")).status_code == 200
    assert (await client.post(f"/sessions/{session_id}/kill")).status_code == 404
    assert (await get(client, session_id))["kill_requested"] is False
    assert (await audit(client))["total"] == 0


async def test_kill_rejects_bad_actor_header(client: httpx.AsyncClient) -> None:
    session_id = await register(client)
    response = await client.post(f"/sessions/{session_id}/kill", headers={ACTOR_HEADER: "bad\x7fname"})
    assert response.status_code == 400
    assert (await get(client, session_id))["kill_requested"] is False


# -- POST /apps/{app}/kill-all -----------------------------------------------------------------------


@pytest.mark.parametrize("app_name", ["plain", "team/app", "what?x=1", "hash#tag", "with space", "a/b?c=d#e f%20"])
async def test_kill_all_with_awkward_app_names(client: httpx.AsyncClient, app_name: str) -> None:
    targets = [await register(client, app_name), await register(client, app_name)]
    ended = await register(client, app_name)
    assert (await client.delete(f"/sessions/{ended}")).status_code == 200
    bystanders = [
        await register(client, "other"),
        await register(client, app_name + "-2"),
        await register(client, app_name.split("/")[0] + "x"),
    ]

    response = await client.post(f"/apps/{quote(app_name, safe='')}/kill-all", headers={ACTOR_HEADER: "admin1"})
    assert response.status_code == 200, response.text
    assert response.json() == {"killed_count": 2}

    for session_id in targets:
        row = await get(client, session_id)
        assert row["kill_requested"] is True and row["kill_requested_by"] == "admin1"
        assert (await client.post(f"/sessions/{session_id}/heartbeat")).json() == {"kill_requested": True}
    for session_id in bystanders:
        assert (await get(client, session_id))["kill_requested"] is False
    assert (await get(client, ended))["kill_requested"] is False

    [entry] = (await audit(client))["entries"]
    assert (entry["actor"], entry["action"], entry["target"]) == ("admin1", "kill_all", app_name)
    assert entry["detail"] == {"killed_count": 2, "reason": None}


async def test_kill_all_with_reason_and_no_sessions(client: httpx.AsyncClient) -> None:
    session_id = await register(client, "app")
    response = await client.post("/apps/app/kill-all", json={"reason": "deploy"})
    assert response.json() == {"killed_count": 1}
    assert (await get(client, session_id))["kill_reason"] == "deploy"

    response = await client.post("/apps/nobody-here/kill-all")
    assert response.status_code == 200
    assert response.json() == {"killed_count": 0}
    entries = (await audit(client, action="kill_all"))["entries"]
    assert [(e["target"], e["detail"]["killed_count"]) for e in entries] == [("nobody-here", 0), ("app", 1)]


# -- DELETE /sessions/stale ---------------------------------------------------------------------------


async def test_cleanup_ends_silent_sessions_as_expired(client: httpx.AsyncClient, clock: FakeClock) -> None:
    silent = await register(client, "app", "sam")
    beating = await register(client, "app")
    clock.advance(minutes=4)
    assert (await client.post(f"/sessions/{beating}/heartbeat")).status_code == 200
    clock.advance(minutes=2)  # silent: 6 min, beating: 2 min

    response = await client.delete("/sessions/stale", params={"older_than_minutes": 5}, headers={ACTOR_HEADER: "eve"})
    assert response.status_code == 200
    assert response.json() == {"deleted_count": 1}

    assert await live_ids(client) == [beating]
    row = await get(client, silent)
    assert row["state"] == "ended"
    assert (row["end_reason"], row["ended_by"]) == ("expired", "eve")
    assert ts(row["ended_at"]) == clock.now
    assert [s["session_id"] for s in (await history(client, reason="expired"))["sessions"]] == [silent]
    assert (await client.post(f"/sessions/{silent}/heartbeat")).status_code == 404

    [entry] = (await audit(client))["entries"]
    assert (entry["actor"], entry["action"], entry["target"]) == ("eve", "cleanup", "sessions")
    assert entry["detail"] == {"deleted_count": 1, "older_than_minutes": 5.0}

    # nothing left to clean: 0, and still audited
    again = await client.delete("/sessions/stale", params={"older_than_minutes": 5})
    assert again.json() == {"deleted_count": 0}
    assert (await audit(client, action="cleanup"))["total"] == 2


async def test_cleanup_defaults_to_ten_minutes(client: httpx.AsyncClient, clock: FakeClock) -> None:
    session_id = await register(client)
    clock.advance(minutes=9)
    assert (await client.delete("/sessions/stale")).json() == {"deleted_count": 0}
    clock.advance(minutes=1, seconds=1)
    assert (await client.delete("/sessions/stale")).json() == {"deleted_count": 1}
    assert (await get(client, session_id))["end_reason"] == "expired"


@pytest.mark.parametrize("minutes", ["0", "-5", "abc", str(60 * 24 * 367)])
async def test_cleanup_rejects_invalid_minutes(client: httpx.AsyncClient, clock: FakeClock, minutes: str) -> None:
    await register(client)
    clock.advance(days=1)
    response = await client.delete("/sessions/stale", params={"older_than_minutes": minutes})
    assert response.status_code == 422
    assert (await live(client))["total"] == 1


# -- GET /history -----------------------------------------------------------------------------------


async def test_history_filters_and_paging(client: httpx.AsyncClient, clock: FakeClock) -> None:
    closed_a = await register(client, "alpha", "u1")
    killed_a = await register(client, "alpha", "u2")
    closed_b = await register(client, "beta", "u1")
    expired_b = await register(client, "beta", "u3")
    still_live = await register(client, "alpha")

    clock.advance(minutes=1)
    for session_id in (closed_a, killed_a, closed_b, still_live):
        await client.post(f"/sessions/{session_id}/heartbeat")
    await client.delete(f"/sessions/{closed_a}")
    clock.advance(seconds=1)
    await client.post(f"/sessions/{killed_a}/kill")
    await client.delete(f"/sessions/{killed_a}")
    clock.advance(seconds=1)
    await client.delete(f"/sessions/{closed_b}")
    clock.advance(seconds=1)
    assert (await client.delete("/sessions/stale", params={"older_than_minutes": 1})).json() == {"deleted_count": 1}

    everything = await history(client)
    assert everything["total"] == 4
    # most recently ended first
    assert [s["session_id"] for s in everything["sessions"]] == [expired_b, closed_b, killed_a, closed_a]
    assert [s["end_reason"] for s in everything["sessions"]] == ["expired", "closed", "killed", "closed"]
    assert all(s["state"] == "ended" for s in everything["sessions"])

    assert [s["session_id"] for s in (await history(client, reason="closed"))["sessions"]] == [closed_b, closed_a]
    assert [s["session_id"] for s in (await history(client, app="alpha"))["sessions"]] == [killed_a, closed_a]
    body = await history(client, app="beta", reason="expired")
    assert [s["session_id"] for s in body["sessions"]] == [expired_b] and body["total"] == 1
    assert [s["session_id"] for s in (await history(client, user="u1"))["sessions"]] == [closed_b, closed_a]
    assert (await history(client, reason="browser_lost")) == {"sessions": [], "total": 0}

    page = await history(client, limit=2, offset=1)
    assert [s["session_id"] for s in page["sessions"]] == [closed_b, killed_a]
    assert page["total"] == 4
    page = await history(client, reason="closed", limit=1, offset=1)
    assert [s["session_id"] for s in page["sessions"]] == [closed_a] and page["total"] == 2

    assert (await client.get("/history", params={"reason": "vanished"})).status_code == 422
    assert still_live in await live_ids(client)


# -- GET /audit ---------------------------------------------------------------------------------------


async def test_audit_filters_and_paging(client: httpx.AsyncClient, clock: FakeClock) -> None:
    s1 = await register(client, "app")
    s2 = await register(client, "app")
    await client.post(f"/sessions/{s1}/kill", headers={ACTOR_HEADER: "alice"})
    clock.advance(seconds=1)
    await client.post(f"/sessions/{s2}/kill", headers={ACTOR_HEADER: "bob"})
    clock.advance(seconds=1)
    await client.post("/apps/app/kill-all", headers={ACTOR_HEADER: "alice"})
    clock.advance(seconds=1)
    await client.delete("/sessions/stale", headers={ACTOR_HEADER: "carol"})
    # session ends and heartbeats are not admin actions
    await client.delete(f"/sessions/{s1}")

    body = await audit(client)
    assert body["total"] == 4
    assert [(e["actor"], e["action"], e["target"]) for e in body["entries"]] == [
        ("carol", "cleanup", "sessions"),
        ("alice", "kill_all", "app"),
        ("bob", "kill", s2),
        ("alice", "kill", s1),
    ]
    ids = [e["id"] for e in body["entries"]]
    assert ids == sorted(ids, reverse=True)
    times = [datetime.fromisoformat(e["at"]) for e in body["entries"]]
    assert times == sorted(times, reverse=True)

    assert [e["target"] for e in (await audit(client, action="kill"))["entries"]] == [s2, s1]
    by_alice = await audit(client, actor="alice")
    assert [e["action"] for e in by_alice["entries"]] == ["kill_all", "kill"] and by_alice["total"] == 2
    assert [e["target"] for e in (await audit(client, actor="alice", action="kill"))["entries"]] == [s1]
    assert (await audit(client, actor="nobody")) == {"entries": [], "total": 0}

    page = await audit(client, limit=2, offset=1)
    assert [e["actor"] for e in page["entries"]] == ["alice", "bob"] and page["total"] == 4
    page = await audit(client, action="kill", limit=1, offset=1)
    assert [e["target"] for e in page["entries"]] == [s1] and page["total"] == 2

    assert (await client.get("/audit", params={"action": "delete"})).status_code == 422
    assert (await client.get("/audit", params={"actor": "a;drop"})).status_code == 422
    assert (await client.get("/audit", params={"limit": 0})).status_code == 422


# -- /healthz and /metrics -------------------------------------------------------------------------------


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "version": __version__, "api_version": API_VERSION}


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_metrics(client: httpx.AsyncClient, clock: FakeClock) -> None:
    a_idle = [await register(client, "alpha"), await register(client, "alpha")]
    a_running = await register(client, "alpha")
    b_stale = await register(client, "beta/sub app")
    await set_status(client, a_running, "running", "work")
    clock.advance(seconds=100)
    for session_id in (*a_idle, a_running):
        assert (await client.post(f"/sessions/{session_id}/heartbeat")).status_code == 200
    clock.advance(seconds=30)
    assert (await client.post(f"/sessions/{a_idle[0]}/kill")).status_code == 200
    assert (await client.post(f"/apps/{quote('beta/sub app', safe='')}/kill-all")).json() == {"killed_count": 1}
    assert (await client.delete(f"/sessions/{a_idle[1]}")).status_code == 200
    assert (await client.post("/sessions/unknown-id/heartbeat")).status_code == 404

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = parse_metrics(response.text)

    gauge = "session_monitor_sessions"
    assert value(samples, gauge, app="alpha", state="idle") == 1.0
    assert value(samples, gauge, app="alpha", state="running") == 1.0
    assert value(samples, gauge, app="beta/sub app", state="stale") == 1.0
    assert value(samples, gauge, app="beta/sub app", state="idle") is None
    assert {k for k in samples if k[0] == gauge} == {
        (gauge, frozenset({("app", "alpha"), ("state", "idle")})),
        (gauge, frozenset({("app", "alpha"), ("state", "running")})),
        (gauge, frozenset({("app", "beta/sub app"), ("state", "stale")})),
    }

    assert value(samples, "session_monitor_kill_requests_total", scope="session") == 1.0
    assert value(samples, "session_monitor_kill_requests_total", scope="app") == 1.0
    assert value(samples, "session_monitor_sessions_registered_total") == 4.0
    assert value(samples, "session_monitor_sessions_ended_total", reason="closed") == 1.0
    assert value(samples, "session_monitor_heartbeats_total") == 3.0

    latency = "session_monitor_http_request_duration_seconds_count"
    assert value(samples, latency, method="POST", route="/sessions", status="200") == 4.0
    assert value(samples, latency, method="POST", route="/sessions/{session_id}/heartbeat", status="200") == 3.0
    assert value(samples, latency, method="POST", route="/sessions/{session_id}/heartbeat", status="404") == 1.0
    assert value(samples, latency, method="POST", route="/sessions/{session_id}/kill", status="200") == 1.0
    assert value(samples, latency, method="DELETE", route="/sessions/{session_id}", status="200") == 1.0
    routes = {dict(labels)["route"] for name, labels in samples if name == latency}
    assert "/apps/{app_name:path}/kill-all" in routes
    for session_id in (*a_idle, a_running, b_stale, "unknown-id"):
        assert not any(session_id in route for route in routes), routes
    assert not any("beta" in route for route in routes), routes
    # a bucket series exists and is cumulative
    buckets = [
        (float(dict(labels)["le"]), v)
        for (name, labels), v in samples.items()
        if name == "session_monitor_http_request_duration_seconds_bucket"
        and dict(labels)["route"] == "/sessions"
        and dict(labels)["method"] == "POST"
    ]
    assert buckets and max(buckets)[1] == 4.0
    counts = [v for _, v in sorted(buckets)]
    assert counts == sorted(counts)


async def test_metrics_unmatched_paths_share_one_label(client: httpx.AsyncClient) -> None:
    for path in ("/nope/1", "/nope/2", "/definitely/not/here"):
        assert (await client.get(path)).status_code == 404
    samples = parse_metrics((await client.get("/metrics")).text)
    latency = "session_monitor_http_request_duration_seconds_count"
    assert value(samples, latency, method="GET", route="unmatched", status="404") == 3.0
    routes = {dict(labels)["route"] for name, labels in samples if name == latency}
    assert not any("nope" in route or "definitely" in route for route in routes)
