"""The dashboard names its operator to the API in ``X-Session-Monitor-Actor``: any name survives, ASCII unchanged.

The dashboard's own :class:`ApiClient` talks to the real app (SQLite and PostgreSQL), and the audit log shows
the name as the operator typed it.
"""

from __future__ import annotations

import httpx
import pytest

from session_monitor.dashboard.client import ACTOR_HEADER, ApiClient, encode_actor
from session_monitor.errors import RequestFailed

NAMES = ["José", "张伟", "مريم الحسيني", "שרה", "Zoë O'Brien", "😀 emoji", "UTF-8''looks-encoded", "a%20b"]


@pytest.mark.parametrize("name", NAMES)
async def test_any_name_reaches_the_audit_log_as_typed(app: object, client: httpx.AsyncClient, name: str) -> None:
    sid = (await client.post("/sessions", json={"app_name": "reports"})).json()["session_id"]
    await client.post("/sessions", json={"app_name": "etl"})
    api = ApiClient("http://127.0.0.1", transport=httpx.ASGITransport(app=app))  # type: ignore[arg-type]
    try:
        await api.kill(sid, actor=name)
        assert (await api.kill_all("etl", actor=name))["killed_count"] == 1
        entries = await api.audit()
    finally:
        await api.aclose()
    assert [e["actor"] for e in entries if e["target"] in (sid, "etl")] == [name, name]
    session = (await client.get(f"/sessions/{sid}")).json()
    assert session["kill_requested"] is True


@pytest.mark.parametrize("name", ["ops", "grace.hopper@example.org", "team lead", "a-b_c:1"])
def test_plain_ascii_names_go_out_unchanged(name: str) -> None:
    assert encode_actor(name) == name


def test_other_names_go_out_as_rfc_8187_ext_values() -> None:
    assert encode_actor("José") == "UTF-8''Jos%C3%A9"
    assert encode_actor("UTF-8''x") == "UTF-8''UTF-8%27%27x"  # never mistaken for an encoded value
    assert encode_actor("50%") == "50%"
    assert all(encode_actor(n).isascii() for n in NAMES)


@pytest.mark.parametrize("raw", ["UTF-8''%FF%FE", "utf-8''%C3"])
async def test_an_undecodable_ext_value_is_refused_with_a_reason(client: httpx.AsyncClient, raw: str) -> None:
    response = await client.post("/apps/reports/kill-all", headers={ACTOR_HEADER: raw})
    assert response.status_code == 400
    assert ACTOR_HEADER.lower() in response.json()["detail"].lower() and "UTF-8" in response.json()["detail"]


async def test_a_control_character_in_a_name_is_refused_with_a_reason(app: object) -> None:
    api = ApiClient("http://127.0.0.1", transport=httpx.ASGITransport(app=app))  # type: ignore[arg-type]
    try:
        with pytest.raises(RequestFailed, match=r"\(400\).*U\+0007"):
            await api.kill_all("reports", actor="bell\x07")
    finally:
        await api.aclose()


async def test_the_lowercase_charset_and_plain_values_keep_working(client: httpx.AsyncClient) -> None:
    for raw, shown in (("utf-8''Jos%C3%A9", "José"), ("ops", "ops"), ("a%20b", "a%20b")):
        (await client.post("/apps/reports/kill-all", headers={ACTOR_HEADER: raw})).raise_for_status()
        entries = (await client.get("/audit", params={"limit": 1})).json()["entries"]
        assert entries[0]["actor"] == shown
