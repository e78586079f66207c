"""``GET /stats/timeline``: live sessions per app over time and ends by reason, on SQLite and PostgreSQL."""

from __future__ import annotations

import httpx

from session_monitor.server import create_app
from tests.conftest import DatabaseTarget, FakeClock


async def test_timeline_counts_live_sessions_per_app_and_ends(client: httpx.AsyncClient, clock: FakeClock) -> None:
    ids = []
    for app in ("reports", "reports", "etl"):
        response = await client.post("/sessions", json={"app_name": app})
        ids.append(response.json()["session_id"])
    clock.advance(minutes=2)
    (await client.delete(f"/sessions/{ids[0]}")).raise_for_status()
    await client.post(f"/sessions/{ids[2]}/kill")
    (await client.delete(f"/sessions/{ids[2]}")).raise_for_status()
    clock.advance(minutes=1)

    response = await client.get("/stats/timeline", params={"window_s": 300, "step_s": 60})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["times"]) == 6 and body["step_s"] == 60
    # Registered 3 min ago; two ended 1 min ago.
    assert body["apps"] == {"reports": [0, 0, 2, 2, 1, 1], "etl": [0, 0, 1, 1, 0, 0]}
    assert body["ended_by_reason"] == {"closed": 1, "killed": 1}


async def test_timeline_bounds(client: httpx.AsyncClient) -> None:
    assert (await client.get("/stats/timeline", params={"window_s": 86400, "step_s": 1})).status_code == 422
    assert (await client.get("/stats/timeline", params={"window_s": 0})).status_code == 422
    empty = (await client.get("/stats/timeline")).json()
    assert empty["apps"] == {} and len(empty["times"]) == 61 and empty["ended_by_reason"] == {}


async def test_timeline_needs_the_admin_token_when_one_is_set(db_target: DatabaseTarget) -> None:
    app = create_app(db_target.settings(admin_token="stats-admin-token-0123456789"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            assert (await c.get("/stats/timeline")).status_code == 401
            authorised = {"Authorization": "Bearer stats-admin-token-0123456789"}
            assert (await c.get("/stats/timeline", headers=authorised)).status_code == 200
