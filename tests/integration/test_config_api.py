"""Shared config over the REST API (SQLite and PostgreSQL): versions, ETag / If-Match, history, revert, and bad
input that changes nothing."""

from __future__ import annotations

import json

import httpx

from session_monitor.protocol import MAX_CONFIG_VALUE_BYTES
from tests.helpers import serving


async def _put(client: httpx.AsyncClient, path: str, value: object, **headers: str) -> httpx.Response:
    return await client.put(path, content=json.dumps(value), headers={"content-type": "application/json", **headers})


async def _state(client: httpx.AsyncClient, app: str, key: str) -> tuple[dict[str, object], dict[str, object]]:
    entry = (await client.get(f"/config/{app}/{key}")).json()
    history = (await client.get(f"/config/{app}/{key}/history")).json()
    return entry, history


async def test_versions_etag_history_and_revert(client: httpx.AsyncClient) -> None:
    first = await _put(client, "/config/reports/theme", {"dark": True})
    assert first.status_code == 200, first.text
    assert first.headers["etag"] == '"1"'
    assert first.json()["version"] == 1
    second = await _put(client, "/config/reports/theme", {"dark": False}, **{"If-Match": '"1"'})
    assert second.status_code == 200 and second.json()["version"] == 2
    got = await client.get("/config/reports/theme")
    assert got.json()["value"] == {"dark": False} and got.headers["etag"] == '"2"'
    listing = (await client.get("/config/reports")).json()
    assert [(e["key"], e["version"]) for e in listing["entries"]] == [("theme", 2)]

    reverted = await client.post("/config/reports/theme/revert", json={"version": 1})
    assert reverted.status_code == 200 and reverted.json() == {**reverted.json(), "value": {"dark": True}, "version": 3}
    deleted = await client.delete("/config/reports/theme", headers={"If-Match": '"3"'})
    assert deleted.status_code == 200 and deleted.json()["version"] == 4
    assert (await client.get("/config/reports/theme")).status_code == 404
    history = (await client.get("/config/reports/theme/history")).json()
    assert [(v["version"], v["action"], v["deleted"]) for v in history["versions"]] == [
        (4, "delete", True), (3, "revert", False), (2, "set", False), (1, "set", False),
    ]  # fmt: skip
    assert history["versions"][1]["reverted_to"] == 1
    # A deleted key keeps its version: creating it again must expect that version, not 0.
    stale = await _put(client, "/config/reports/theme", 1, **{"If-Match": '"0"'})
    assert stale.status_code == 412 and stale.json()["current_version"] == 4
    again = await _put(client, "/config/reports/theme", 1, **{"If-Match": '"4"'})
    assert again.status_code == 200 and again.json()["version"] == 5
    audit = (await client.get("/audit")).json()["entries"]
    assert {e["action"] for e in audit} >= {"config_set", "config_revert", "config_delete"}


async def test_bad_input_changes_nothing(client: httpx.AsyncClient) -> None:
    assert (await _put(client, "/config/app/k", [1, 2])).status_code == 200
    before = await _state(client, "app", "k")

    big = "x" * (MAX_CONFIG_VALUE_BYTES + 1)
    too_big = await _put(client, "/config/app/k", big)
    assert too_big.status_code == 413, too_big.text
    way_too_big = await _put(client, "/config/app/k", "x" * (4 * MAX_CONFIG_VALUE_BYTES))
    assert way_too_big.status_code == 413
    not_json = await client.put("/config/app/k", content=b"{not json", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and "JSON" in not_json.json()["detail"]
    nan = await client.put("/config/app/k", content=b"NaN")
    assert nan.status_code == 422
    unknown = await client.post("/config/app/k/revert", json={"version": 99})
    assert unknown.status_code == 404 and "version 99" in unknown.json()["detail"]
    stale = await _put(client, "/config/app/k", "new", **{"If-Match": '"7"'})
    assert stale.status_code == 412
    assert stale.json()["current_version"] == 1 and stale.json()["current_value"] == [1, 2]
    assert stale.headers["etag"] == '"1"'
    stale_delete = await client.delete("/config/app/k", headers={"If-Match": '"2"'})
    assert stale_delete.status_code == 412
    bad_key = await _put(client, "/config/app/bad%20key", 1)
    assert bad_key.status_code == 422
    bad_if_match = await _put(client, "/config/app/k", 1, **{"If-Match": "soon"})
    assert bad_if_match.status_code == 422

    assert await _state(client, "app", "k") == before
    assert (await client.get("/config/app/other")).status_code == 404
    assert (await client.post("/config/app/other/revert", json={"version": 1})).status_code == 404


async def test_exactly_256_kib_is_accepted(client: httpx.AsyncClient) -> None:
    value = "x" * (MAX_CONFIG_VALUE_BYTES - 2)  # the two quotes make it exactly the limit
    response = await _put(client, "/config/app/big", value)
    assert response.status_code == 200
    assert (await client.get("/config/app/big")).json()["value"] == value


async def test_tokens(db_target) -> None:
    admin, agent = "a" * 20, "c" * 20
    settings = db_target.settings(admin_token=admin, client_token=agent)
    async with serving(settings) as (_, client):
        assert (await _put(client, "/config/app/k", 1)).status_code == 401
        assert (await client.get("/config/app")).status_code == 401
        who = {"X-Session-Monitor-Actor": "h:1"}
        ok = await _put(client, "/config/app/k", 1, authorization=f"Bearer {agent}", **who)
        assert ok.status_code == 200 and ok.json()["updated_by"] == "client:h:1"
        by_admin = await _put(client, "/config/app/k", 2, authorization=f"Bearer {admin}")
        assert by_admin.json()["updated_by"] == "admin"
        audit = await client.get("/audit", headers={"authorization": f"Bearer {admin}"})
        assert [e["action"] for e in audit.json()["entries"]] == ["config_set"]  # the process's write is history only


async def test_an_app_name_with_a_control_character_is_refused(client: httpx.AsyncClient) -> None:
    assert (await _put(client, "/config/a%07b/k", 1)).status_code == 422
    assert (await client.get("/config")).json()["apps"] == []
