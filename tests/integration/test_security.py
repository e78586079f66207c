"""Tokens, CSRF, DNS rebinding, body limit and the bind check, on SQLite and the real PostgreSQL.

Every refused request is also checked to have changed nothing: the rows of
``sessions`` and ``audit_log`` are compared before and after.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import click.testing
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import ValidationError

from session_monitor.server import Settings
from session_monitor.store.models import audit_log, sessions
from tests.conftest import DatabaseTarget
from tests.helpers import serving

ADMIN = "admin-secret-7f3a9c1e5b2d"
CLIENT = "client-secret-4e8b2a6d0c9f"
WRONG = "wrong-secret-1a2b3c4d5e6f"
APP = "secure-app"

Snapshot = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]


async def snapshot(app: FastAPI) -> Snapshot:
    def read(conn: sa.Connection) -> Snapshot:
        rows = conn.execute(sa.select(sessions).order_by(sessions.c.session_id)).all()
        audit = conn.execute(sa.select(audit_log).order_by(audit_log.c.id)).all()
        return [tuple(r) for r in rows], [tuple(r) for r in audit]

    result: Snapshot = await app.state.store.db.read(read)
    return result


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def assert_error(response: httpx.Response, status: int) -> str:
    """The status, and a JSON body whose ``detail`` says what is wrong."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.strip()
    return detail


async def register(client: httpx.AsyncClient, token: str | None = CLIENT, app_name: str = APP) -> str:
    response = await client.post("/sessions", json={"app_name": app_name, "user_id": "alice"}, headers=auth(token))
    assert response.status_code == 200, response.text
    session_id: str = response.json()["session_id"]
    return session_id


# -- bearer tokens ------------------------------------------------------------------------------

ADMIN_ENDPOINTS = {
    "kill": ("POST", "/sessions/{sid}/kill", {"reason": "maintenance"}),
    "kill-all": ("POST", f"/apps/{APP}/kill-all", None),
    "cleanup": ("DELETE", "/sessions/stale?older_than_minutes=1", None),
    "history": ("GET", "/history", None),
    "audit": ("GET", "/audit", None),
}


@pytest.mark.parametrize("endpoint", list(ADMIN_ENDPOINTS))
async def test_admin_endpoint_needs_the_admin_token(db_target: DatabaseTarget, endpoint: str) -> None:
    method, template, body = ADMIN_ENDPOINTS[endpoint]
    async with serving(db_target.settings(admin_token=ADMIN, client_token=CLIENT)) as (app, client):
        sid = await register(client)
        url = template.format(sid=sid)
        before = await snapshot(app)

        async def call(headers: dict[str, str]) -> httpx.Response:
            return await client.request(method, url, json=body, headers=headers)

        response = await call({})
        assert "admin token" in assert_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        for headers in (auth(WRONG), auth(ADMIN[:-1]), auth(ADMIN + "0"), {"Authorization": f"Basic {ADMIN}"}):
            response = await call(headers)
            assert_error(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        assert "admin token" in assert_error(await call(auth(CLIENT)), 403)
        assert await snapshot(app) == before

        response = await call(auth(ADMIN))
        assert response.status_code == 200, response.text
        after = await snapshot(app)
        if method == "GET":
            assert after == before
        else:  # the action ran and was audited: the comparison above can see a change
            assert len(after[1]) == len(before[1]) + 1
            assert after[1][-1][audit_log.c.keys().index("actor")] == "admin"


CLIENT_ENDPOINTS = {
    "register": ("POST", "/sessions", {"app_name": APP}),
    "heartbeat": ("POST", "/sessions/{sid}/heartbeat", None),
    "status": ("PUT", "/sessions/{sid}/status", {"status": "running", "current_task": "crunching"}),
    "end": ("DELETE", "/sessions/{sid}", None),
}


@pytest.mark.parametrize("endpoint", list(CLIENT_ENDPOINTS))
async def test_client_endpoint_needs_the_client_or_admin_token(db_target: DatabaseTarget, endpoint: str) -> None:
    method, template, body = CLIENT_ENDPOINTS[endpoint]
    async with serving(db_target.settings(admin_token=ADMIN, client_token=CLIENT)) as (app, client):

        async def call(headers: dict[str, str]) -> tuple[httpx.Response, Snapshot]:
            sid = await register(client)  # a fresh session each time: ending one is final
            before = await snapshot(app)
            response = await client.request(method, template.format(sid=sid), json=body, headers=headers)
            return response, before

        for headers in ({}, auth(WRONG), auth(CLIENT[:-1]), {"Authorization": "Bearer "}, {"Authorization": CLIENT}):
            response, before = await call(headers)
            assert_error(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
            assert await snapshot(app) == before, headers

        for token in (CLIENT, ADMIN):
            response, before = await call(auth(token))
            assert response.status_code == 200, response.text
            assert await snapshot(app) != before


READ_ENDPOINTS = {
    # name: (path, whether the client token may read it)
    "sessions": ("/sessions", False),
    "session": ("/sessions/{sid}", False),
    "changes": ("/sessions?changed_since=2026-01-01T00:00:00%2B00:00", False),
    "agents": ("/agents", False),
    "history": ("/history", False),
    "stats": ("/stats/timeline", False),
    "metrics": ("/metrics", True),
}


@pytest.mark.parametrize("endpoint", list(READ_ENDPOINTS))
async def test_reads_need_a_token_when_tokens_are_set(db_target: DatabaseTarget, endpoint: str) -> None:
    path, client_may = READ_ENDPOINTS[endpoint]
    async with serving(db_target.settings(admin_token=ADMIN, client_token=CLIENT)) as (_, client):
        sid = await register(client)
        url = path.format(sid=sid)
        for headers in ({}, auth(WRONG), {"Authorization": f"Basic {ADMIN}"}):
            response = await client.get(url, headers=headers)
            assert_error(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        by_client = await client.get(url, headers=auth(CLIENT))
        if client_may:
            assert by_client.status_code == 200, by_client.text
        else:
            assert "admin token" in assert_error(by_client, 403)
        by_admin = await client.get(url, headers=auth(ADMIN))
        assert by_admin.status_code == 200, by_admin.text
        if endpoint == "sessions":
            assert [s["session_id"] for s in by_admin.json()["sessions"]] == [sid]


@pytest.mark.parametrize("tokens", ["admin", "both"])
async def test_open_reads_switch_lets_the_prototype_monitor_list(db_target: DatabaseTarget, tokens: str) -> None:
    """``SESSION_MONITOR_OPEN_READS``: the prototype's monitor.py lists without a token; admin reads stay guarded."""
    overrides: dict[str, Any] = {"admin_token": ADMIN, "open_reads": True}
    if tokens == "both":
        overrides["client_token"] = CLIENT
    async with serving(db_target.settings(**overrides)) as (_, client):
        sid = await register(client, token=overrides.get("client_token"))
        listing = await client.get("/sessions")
        assert listing.status_code == 200, listing.text
        assert [s["session_id"] for s in listing.json()["sessions"]] == [sid]
        assert (await client.get(f"/sessions/{sid}")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        for path in ("/history", "/audit", "/agents", "/stats/timeline"):
            assert_error(await client.get(path), 401)
        assert_error(await client.get("/sessions", headers={"Host": "evil.example"}), 421)


async def test_open_reads_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().open_reads is False
    monkeypatch.setenv("SESSION_MONITOR_OPEN_READS", "true")
    assert Settings().open_reads is True


async def test_health_and_docs_stay_open_with_tokens(db_target: DatabaseTarget) -> None:
    async with serving(db_target.settings(admin_token=ADMIN, client_token=CLIENT)) as (_, client):
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/docs")).status_code == 200


async def test_admin_token_alone_leaves_registering_and_ending_open(db_target: DatabaseTarget) -> None:
    """The design decision in deps.py: with only an admin token, a session's own client registers and ends it."""
    async with serving(db_target.settings(admin_token=ADMIN)) as (app, client):
        sid = await register(client, token=None)
        assert (await client.put(f"/sessions/{sid}/status", json={"status": "running"})).status_code == 200
        assert (await client.post(f"/sessions/{sid}/heartbeat")).status_code == 200
        before = await snapshot(app)
        assert_error(await client.post(f"/sessions/{sid}/kill"), 401)
        assert_error(await client.delete(f"/sessions/{sid}", headers=auth(WRONG)), 401)
        assert await snapshot(app) == before
        assert (await client.delete(f"/sessions/{sid}")).json() == {"status": "deleted"}
        ended = await client.get(f"/sessions/{sid}", headers=auth(ADMIN))
        assert ended.json()["end_reason"] == "closed"


async def test_tokens_never_logged_nor_echoed(
    db_target: DatabaseTarget, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI's logging config turns propagation off; make sure this test sees every record.
    monkeypatch.setattr(logging.getLogger("session_monitor"), "propagate", True)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="session_monitor")
    viewer, operator = "named-viewer-secret-9c1e5b2d", "named-operator-secret-5b2d7f3a"
    secrets = (ADMIN, CLIENT, WRONG, ADMIN[:-1], CLIENT + "x", viewer, operator, operator[:-1])
    named = {"vic": {"token": viewer, "role": "viewer"}, "opal": {"token": operator, "role": "operator", "apps": ["x"]}}
    settings = db_target.settings(admin_token=ADMIN, client_token=CLIENT, tokens=named)
    for text in (repr(settings), str(settings), settings.model_dump_json(), repr(settings.token_table.grants)):
        assert not [secret for secret in (ADMIN, CLIENT, viewer, operator) if secret in text]
    echoed: list[str] = []
    async with serving(settings) as (_, client):
        sid = await register(client)
        for token in (*secrets, None):
            headers = {**auth(token), "X-Session-Monitor-Actor": "ops"}
            for method, url, body in (
                ("POST", "/sessions", {"app_name": APP}),
                ("POST", "/sessions", {"app_name": ""}),
                ("POST", f"/sessions/{sid}/heartbeat", None),
                ("PUT", f"/sessions/{sid}/status", {"status": "Not A Status"}),
                ("POST", f"/sessions/{sid}/kill", {"reason": "r"}),
                ("POST", "/sessions/no-such-session/kill", None),
                ("GET", "/history", None),
                ("GET", "/audit?limit=0", None),
                ("DELETE", "/sessions/stale?older_than_minutes=0", None),
                ("DELETE", "/sessions/no-such-session", None),
            ):
                response = await client.request(method, url, json=body, headers=headers)
                assert response.status_code < 500
                echoed.append(response.text)
                echoed.extend(f"{k}: {v}" for k, v in response.headers.items())
    assert any(r.name.startswith("session_monitor") for r in caplog.records), "the log capture saw nothing"
    logged = [caplog.text]
    for record in caplog.records:
        logged += [record.getMessage(), repr(record.args), record.exc_text or ""]
    for secret in secrets:
        assert not [line for line in logged if secret in line]
        assert not [line for line in echoed if secret in line]


@pytest.mark.parametrize("field", ["admin_token", "client_token"])
def test_short_tokens_are_refused_without_echoing_them(field: str, monkeypatch: pytest.MonkeyPatch) -> None:
    short = "s3cret-15-chars"
    assert len(short) == 15
    with pytest.raises(ValidationError, match="at least 16 characters") as excinfo:
        Settings(**{field: short})  # type: ignore[arg-type]
    assert short not in str(excinfo.value)
    monkeypatch.setenv(f"SESSION_MONITOR_{field.upper()}", short)
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings()
    monkeypatch.setenv(f"SESSION_MONITOR_{field.upper()}", short + "x")
    token = getattr(Settings(), field)
    assert token is not None and token.get_secret_value() == short + "x"


# -- CSRF -----------------------------------------------------------------------------------------

CROSS_SITE = {
    "foreign-origin": {"Origin": "https://evil.example"},
    "foreign-origin-same-host-other-port": {"Origin": "http://127.0.0.1:8000"},
    "sec-fetch-cross-site": {"Sec-Fetch-Site": "cross-site"},
    "sec-fetch-same-site": {"Sec-Fetch-Site": "same-site"},
    "origin-null": {"Origin": "null"},
    "malformed-origin": {"Origin": "http://["},
}
# What a plain form or a no-preflight fetch can send.
SIMPLE_BODIES = {
    "text/plain": ({"Content-Type": "text/plain"}, b'{"app_name": "csrf", "status": "running"}'),
    "form": ({"Content-Type": "application/x-www-form-urlencoded"}, b"app_name=csrf&status=running"),
    "none": ({}, b'{"app_name": "csrf", "status": "running"}'),
}


@pytest.mark.parametrize("cross", list(CROSS_SITE))
async def test_cross_site_state_changes_are_refused(db_target: DatabaseTarget, cross: str) -> None:
    # No tokens: the guard is all that stands between a foreign page and these endpoints.
    async with serving(db_target.settings()) as (app, client):
        sid = await register(client, token=None)
        before = await snapshot(app)
        targets = [
            ("POST", "/sessions"),
            ("POST", f"/sessions/{sid}/kill"),
            ("POST", f"/apps/{APP}/kill-all"),
            ("POST", f"/sessions/{sid}/heartbeat"),
            ("PUT", f"/sessions/{sid}/status"),
            ("DELETE", f"/sessions/{sid}"),
            ("DELETE", "/sessions/stale?older_than_minutes=1"),
        ]
        for method, url in targets:
            for content_headers, content in SIMPLE_BODIES.values():
                headers = {**CROSS_SITE[cross], **content_headers}
                response = await client.request(method, url, content=content, headers=headers)
                assert_error(response, 403)
        assert await snapshot(app) == before
        # Reads are not state changes, and the same kill without the cross-site marks goes through.
        assert (await client.get("/sessions", headers=CROSS_SITE[cross])).status_code == 200
        assert (await client.post(f"/sessions/{sid}/kill")).status_code == 200


async def test_same_origin_and_trusted_origins_are_accepted(db_target: DatabaseTarget) -> None:
    settings = db_target.settings(trusted_origins=["https://dash.example"])
    async with serving(settings) as (app, client):
        same_origin = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
        sid = await register(client, token=None)
        response = await client.post("/sessions", json={"app_name": APP}, headers=same_origin)
        assert response.status_code == 200, response.text
        response = await client.post(f"/sessions/{sid}/heartbeat", headers={"Sec-Fetch-Site": "none"})
        assert response.status_code == 200, response.text

        trusted = {"Origin": "https://dash.example", "Sec-Fetch-Site": "cross-site"}
        response = await client.post(f"/sessions/{sid}/kill", headers=trusted)
        assert response.status_code == 200, response.text
        before = await snapshot(app)
        for origin in ("https://evil.example", "https://dash.example.evil.example", "http://dash.example"):
            response = await client.post(f"/apps/{APP}/kill-all", headers={"Origin": origin})
            assert_error(response, 403)
        assert await snapshot(app) == before


# -- DNS rebinding ---------------------------------------------------------------------------------

HOST_CASES: dict[str, tuple[dict[str, Any], bool]] = {
    # name: (settings overrides, whether a foreign Host is refused)
    "no-tokens": ({}, True),
    "client-token-only": ({"client_token": CLIENT}, True),  # admin actions are still open
    "admin-token-only": ({"admin_token": ADMIN}, True),  # client endpoints (and DELETE) are still open
    # Reads are guarded by the admin token, but a rebinding page must not even reach the server's answers.
    "both-tokens": ({"admin_token": ADMIN, "client_token": CLIENT}, True),
    "insecure": ({"insecure": True}, True),
    "explicit-wildcard": ({"allowed_hosts": ["*"], "admin_token": ADMIN, "client_token": CLIENT}, False),
}


async def test_allowed_hosts_admits_a_proxy_name(db_target: DatabaseTarget) -> None:
    async with serving(db_target.settings(allowed_hosts=["monitor.internal"])) as (_, client):
        assert_error(await client.get("/sessions", headers={"Host": "evil.example"}), 421)
        assert (await client.get("/sessions", headers={"Host": "monitor.internal:8443"})).status_code == 200
        assert_error(await client.get("/sessions", headers={"Host": "other.internal"}), 421)


@pytest.mark.parametrize("case", list(HOST_CASES))
async def test_foreign_host_names(db_target: DatabaseTarget, case: str) -> None:
    overrides, refused = HOST_CASES[case]
    async with serving(db_target.settings(**overrides)) as (app, client):
        sid = await register(client, token=overrides.get("client_token"))
        read = auth(ADMIN) if "admin_token" in overrides else {}
        # IP literals cannot be rebound: a page reaching the server by address is on that address's origin.
        for host in ("localhost", "localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST", "10.1.2.3:8000"):
            assert (await client.get("/sessions", headers={"Host": host, **read})).status_code == 200, host
        before = await snapshot(app)
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example", ""):
            listing = await client.get("/sessions", headers={"Host": host, **read})
            kill = await client.post(f"/sessions/{sid}/kill", headers={"Host": host, **auth(ADMIN)})
            if refused:
                assert "ALLOWED_HOSTS" in assert_error(listing, 421)
                assert_error(kill, 421)
                assert await snapshot(app) == before
            else:
                assert listing.status_code == 200, (host, listing.text)
                assert kill.status_code == 200, (host, kill.text)


async def test_dns_rebinding_page_reads_nothing_with_both_tokens(db_target: DatabaseTarget) -> None:
    """The reproduced attack: a page on evil.example rebound to the server reads the session list.

    The browser sends ``Host: evil.example`` and no token (the page has none); even a request carrying the
    admin token (it cannot, but the Host check must not depend on it) is refused before any route runs.
    """
    async with serving(db_target.settings(admin_token=ADMIN, client_token=CLIENT)) as (_, client):
        sid = await register(client)
        for path in ("/sessions", f"/sessions/{sid}", "/metrics", "/agents", "/history", "/stats/timeline"):
            for headers in ({}, auth(ADMIN)):
                response = await client.get(path, headers={"Host": "evil.example", **headers})
                assert "ALLOWED_HOSTS" in assert_error(response, 421), path
                assert "alice" not in response.text and sid not in response.text and APP not in response.text


# -- body size ---------------------------------------------------------------------------------------


async def test_body_limit(db_target: DatabaseTarget) -> None:
    limit = 1024
    async with serving(db_target.settings(max_body_bytes=limit)) as (app, client):
        sid = await register(client, token=None)
        before = await snapshot(app)
        big = b'{"app_name": "' + b"x" * limit + b'"}'
        assert str(limit) in assert_error(await client.post("/sessions", content=big), 413)
        response = await client.put(f"/sessions/{sid}/status", json={"status": "running", "current_task": "y" * limit})
        assert_error(response, 413)
        # A declared length over the limit is refused before the body is read.
        response = await client.post("/sessions", content=b"{}", headers={"Content-Length": str(10**9)})
        assert_error(response, 413)
        response = await client.post("/sessions", content=b"{}", headers={"Content-Length": "9" * 5000})
        assert_error(response, 413)

        async def chunks(size: int, count: int) -> AsyncIterator[bytes]:
            for _ in range(count):
                yield b" " * size

        response = await client.post("/sessions", content=chunks(600, 2))
        assert "Content-Length" not in response.request.headers
        assert_error(response, 413)
        for bad in ("abc", "-1", "1.5", "", " 12", "0x10", b"\xb2", "١٢"):
            headers = {b"Content-Length": bad if isinstance(bad, bytes) else bad.encode()}
            response = await client.post("/sessions", content=b"{}", headers=headers)
            assert "Content-Length" in assert_error(response, 400)
        assert await snapshot(app) == before

        async def small_body() -> AsyncIterator[bytes]:
            yield b'{"app_name": '
            yield b'"chunked"}'

        response = await client.post("/sessions", content=small_body(), headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        padded = b'{"app_name": "' + b"x" * 150 + b'"}' + b" " * (limit - 166)
        assert len(padded) == limit
        response = await client.post("/sessions", content=padded, headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        assert len((await snapshot(app))[0]) == len(before[0]) + 2


# -- binding --------------------------------------------------------------------------------------------


@pytest.fixture
def cli_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[click.testing.CliRunner]:
    """A CliRunner in an empty folder; the loggers the CLI configures are put back afterwards."""
    names = ["session_monitor", "uvicorn", "uvicorn.access"]
    saved = {name: (lg.level, lg.propagate, list(lg.handlers)) for name in names for lg in [logging.getLogger(name)]}
    monkeypatch.chdir(tmp_path)
    try:
        yield click.testing.CliRunner()
    finally:
        for name, (level, propagate, handlers) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.propagate = propagate
            logger.handlers[:] = handlers


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Record what `serve` would start instead of listening on a real address."""
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    return calls


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.org"])
def test_serve_refuses_a_public_bind_without_tokens(
    cli_runner: click.testing.CliRunner, uvicorn_calls: list[dict[str, Any]], host: str
) -> None:
    from session_monitor.cli import main

    result = cli_runner.invoke(main, ["serve", "--host", host])
    assert result.exit_code == 2, result.output
    assert f"refusing to listen on {host}" in result.stderr
    assert "SESSION_MONITOR_ADMIN_TOKEN" in result.stderr and "--insecure" in result.stderr
    assert uvicorn_calls == []
    # A client token alone does not protect the admin actions.
    result = cli_runner.invoke(main, ["serve", "--host", host], env={"SESSION_MONITOR_CLIENT_TOKEN": CLIENT})
    assert result.exit_code == 2 and "refusing" in result.stderr
    assert CLIENT not in result.output
    assert uvicorn_calls == []


def test_serve_says_why_a_token_is_refused_without_printing_it(
    cli_runner: click.testing.CliRunner, uvicorn_calls: list[dict[str, Any]]
) -> None:
    from session_monitor.cli import main

    short = "s3cret-15-chars"
    result = cli_runner.invoke(main, ["serve"], env={"SESSION_MONITOR_ADMIN_TOKEN": short})
    assert result.exit_code == 2, result.output
    assert "at least 16 characters" in result.stderr
    assert short not in result.output
    assert uvicorn_calls == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_public_bind_is_allowed_with_insecure_or_an_admin_token(
    cli_runner: click.testing.CliRunner, uvicorn_calls: list[dict[str, Any]], host: str
) -> None:
    assert Settings(host=host).bind_problem() is not None
    assert Settings(host=host, client_token=CLIENT).bind_problem() is not None
    assert Settings(host=host, insecure=True).bind_problem() is None
    assert Settings(host=host, admin_token=ADMIN).bind_problem() is None
    for loopback in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"):
        assert Settings(host=loopback).bind_problem() is None, loopback

    from session_monitor.cli import main

    # uvicorn.run is replaced by a recorder: nothing listens on the public address.
    result = cli_runner.invoke(main, ["serve", "--host", host, "--insecure"])
    assert result.exit_code == 0, result.output
    result = cli_runner.invoke(main, ["serve", "--host", host], env={"SESSION_MONITOR_ADMIN_TOKEN": ADMIN})
    assert result.exit_code == 0, result.output
    assert ADMIN not in result.output
    assert [call["host"] for call in uvicorn_calls] == [host, host]
