"""``GET/PUT /policies`` and what agent syncs carry of them, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from session_monitor.server import Settings
from tests.conftest import DatabaseTarget, FakeClock
from tests.helpers import serving

A, B = "agent-0000aaaa", "agent-1111bbbb"
ADMIN = "admin-secret-7f3a9c1e5b2d"
CLIENT = "client-secret-4e8b2a6d0c9f"

POLICIES: dict[str, Any] = {
    "apps": {"sales": {"max_sessions": 20, "max_sessions_per_user": 3}, "kiosk": {"max_sessions": 4}},
    "max_sessions_per_user": 10,
    "max_sessions_per_process": 50,
    "exempt_users": ["admin"],
    "exempt_apps": ["kiosk"],
}


def _session(sid: str, clock: FakeClock, app: str, user: str | None, **extra: Any) -> dict[str, Any]:
    started = (clock.now - timedelta(minutes=1)).isoformat()
    return {"session_id": sid, "app_name": app, "user_id": user, "started_at": started, **extra}


async def _sync(client: httpx.AsyncClient, clock: FakeClock, agent: str, pid: int, **body: Any) -> dict[str, Any]:
    info = {"host": "web-1", "pid": pid, "started_at": (clock.now - timedelta(hours=1)).isoformat()}
    response = await client.post(f"/agents/{agent}/sync", json={"agent": info, **body})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def fresh_counts(app: Any) -> None:
    app.state.policy_cache.max_age_s = 0.0  # every sync reads the counts anew (the default shares them 0.5 s)


async def test_policies_start_empty_and_a_put_replaces_them_audited(client: httpx.AsyncClient) -> None:
    empty = (await client.get("/policies")).json()
    assert empty["policies"] == {
        "apps": {}, "max_sessions_per_user": None, "max_sessions_per_process": None, "exempt_users": [],
        "exempt_apps": [],
    }  # fmt: skip
    assert (empty["updated_at"], empty["updated_by"]) == (None, None)

    response = await client.put("/policies", json=POLICIES, headers={"X-Session-Monitor-Actor": "ops"})
    assert response.status_code == 200, response.text
    shown = (await client.get("/policies")).json()
    assert shown["policies"]["apps"]["sales"] == {"max_sessions": 20, "max_sessions_per_user": 3}
    assert shown["policies"]["exempt_apps"] == ["kiosk"] and shown["updated_by"] == "ops"

    await client.put("/policies", json={"max_sessions_per_process": 5})
    [latest, first] = (await client.get("/audit", params={"action": "policies"})).json()["entries"]
    assert (first["actor"], first["target"], first["detail"]["previous"]) == ("ops", "policies", None)
    assert latest["detail"]["previous"]["apps"]["kiosk"] == {"max_sessions": 4, "max_sessions_per_user": None}
    assert latest["detail"]["policies"]["max_sessions_per_process"] == 5
    assert (await client.get("/policies")).json()["policies"]["apps"] == {}  # replaced, not merged


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"apps": {"sales": {"max_session": 3}}}, "apps.sales.max_session: Extra inputs are not permitted"),
        ({"max_sessions_per_user": 0}, "max_sessions_per_user: Input should be greater than or equal to 1"),
        ({"max_sessions_per_process": 2.5}, "max_sessions_per_process"),
        ({"max_sessions_per_process": "3"}, "max_sessions_per_process"),
        ({"max_sessions_per_process": True}, "max_sessions_per_process"),
        ({"apps": {"": {"max_sessions": 1}}}, "apps"),
        ({"apps": {"a\nb": {"max_sessions": 1}}}, "apps"),
        ({"exempt_users": ["bob", "bob"]}, "exempt_users lists 'bob' more than once"),
        ({"exempt_apps": ["x" * 201]}, "exempt_apps.0"),
        ({"exempt_users": ["ok", " "]}, "exempt_users.1: Value error, must not be blank"),
        ({"max_sessions_per_user": 1_000_001}, "less than or equal to 1000000"),
    ],
)
async def test_bad_policies_get_a_clear_422_and_change_nothing(
    client: httpx.AsyncClient, body: dict[str, Any], says: str
) -> None:
    await client.put("/policies", json=POLICIES)
    response = await client.put("/policies", json=body)
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]
    assert (await client.get("/policies")).json()["policies"]["max_sessions_per_process"] == 50
    assert (await client.get("/audit", params={"action": "policies"})).json()["total"] == 1


async def test_policies_need_the_admin_token_to_be_set_and_a_reader_to_be_read(db_target: DatabaseTarget) -> None:
    settings: Settings = db_target.settings(admin_token=ADMIN, client_token=CLIENT)
    async with serving(settings) as (_, client):
        assert (await client.get("/policies")).status_code == 401
        assert (await client.put("/policies", json=POLICIES)).status_code == 401
        client_auth = {"Authorization": f"Bearer {CLIENT}"}
        assert (await client.put("/policies", json=POLICIES, headers=client_auth)).status_code == 403
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert (await client.put("/policies", json=POLICIES, headers=admin)).status_code == 200
        assert (await client.get("/policies", headers=admin)).json()["updated_by"] == "admin"


@pytest.mark.usefixtures("fresh_counts")
async def test_a_sync_answer_carries_the_policies_and_the_other_processes_counts(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    no_limits = await _sync(client, clock, A, 1, full=True)
    assert no_limits["policies"]["apps"] == {} and no_limits["others"] is None  # nothing counted without limits
    await client.put("/policies", json=POLICIES)
    mine = [_session(f"a{i}", clock, "sales", user) for i, user in enumerate(["alice", "alice", "bob", None])]
    mine.append(_session("a-kiosk", clock, "kiosk", "alice"))
    await _sync(client, clock, A, 1, full=True, sessions=mine)
    theirs = [_session("b0", clock, "sales", "alice"), _session("b1", clock, "other", "carol")]
    answer_b = await _sync(client, clock, B, 2, full=True, sessions=theirs)
    # B is told about A's sessions only: it counts its own itself.
    assert answer_b["others"] == {
        "apps": {"sales": 4, "kiosk": 1}, "app_users": {"sales": {"alice": 2, "bob": 1}},
        "users": {"alice": 3, "bob": 1},
    }  # fmt: skip
    answer_a = await _sync(client, clock, A, 1)
    assert answer_a["others"] == {"apps": {"sales": 1}, "app_users": {"sales": {"alice": 1}}, "users": {"alice": 1,
                                  "carol": 1}}  # fmt: skip
    assert answer_a["policies"]["exempt_users"] == ["admin"]

    shown = (await client.get("/policies")).json()
    assert shown["counts"]["apps"] == {"sales": 5, "kiosk": 1}
    assert shown["counts"]["users"] == {"alice": 4, "bob": 1, "carol": 1}
    assert [(p["pid"], p["sessions"]) for p in shown["processes"]] == [(1, 5), (2, 2)]


async def test_a_refused_session_is_history_and_an_exempt_one_is_flagged(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    refused = _session("r1", clock, "sales", "alice")
    kiosk = _session("k1", clock, "kiosk", None, exempt=True)
    ended = [{"session_id": "r1", "reason": "refused", "ended_at": clock.now.isoformat()}]
    await _sync(client, clock, A, 1, full=True, sessions=[refused, kiosk], ended=ended)
    history = (await client.get("/history", params={"reason": "refused"})).json()["sessions"]
    assert [(s["session_id"], s["user_id"], s["end_reason"]) for s in history] == [("r1", "alice", "refused")]
    [live] = (await client.get("/sessions")).json()["sessions"]
    assert (live["session_id"], live["exempt"]) == ("k1", True)
    changes = await client.get("/sessions", params={"changed_since": (clock.now - timedelta(minutes=5)).isoformat()})
    assert {s["session_id"]: s["exempt"] for s in changes.json()["sessions"]} == {"k1": True, "r1": False}
    metrics = (await client.get("/metrics")).text
    assert 'session_monitor_sessions_ended_total{reason="refused"} 1.0' in metrics
