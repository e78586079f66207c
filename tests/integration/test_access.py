"""Every route of the app × every kind of caller → the status its declared role means.

The routes come from the app itself (its OpenAPI operations and ``app.routes``), so a new route cannot skip this
test: one without a guard (``require_role``) fails, and so does one without a request in :data:`REQUESTS`. The
expected status is derived from the route's guard, the one place a route declares its role; what the server then
answers must agree. Refused calls are checked to change nothing (sessions and audit rows compared).
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from session_monitor.server.deps import ACCESS_KEY, OperatorDep, RoleGuard, api_routes, route_guards
from session_monitor.server.tokens import Role
from tests.conftest import DatabaseTarget
from tests.helpers import serving
from tests.integration.test_security import snapshot

CLIENT = "client-token-for-access-01"
ADMIN_LEGACY = "legacy-admin-token-access"
TOKENS: dict[str, dict[str, Any]] = {
    "vera": {"token": "viewer-token-for-access-1", "role": "viewer"},
    "olga": {"token": "operator-a-token-access-1", "role": "operator", "apps": ["app-a"]},
    "otto": {"token": "operator-b-token-access-1", "role": "operator", "apps": ["app-b"]},
    "omar": {"token": "operator-all-apps-token-1", "role": "operator"},
    "ada": {"token": "admin-named-token-access1", "role": "admin"},
}
APP = "app-a"
"""Every request acts on this app: ``olga`` operates it, ``otto`` operates only ``app-b``."""

CALLERS: dict[str, str | None] = {
    "viewer": TOKENS["vera"]["token"],
    "operator-in-its-apps": TOKENS["olga"]["token"],
    "operator-outside-its-apps": TOKENS["otto"]["token"],
    "operator-of-every-app": TOKENS["omar"]["token"],
    "admin": TOKENS["ada"]["token"],
    "legacy-admin": ADMIN_LEGACY,
    "client": CLIENT,
    "no-token": None,
    "wrong-token": "not-a-configured-token-0",
}


@dataclass
class Call:
    """What a request needs from the server's state: a live session of :data:`APP` (fresh per call)."""

    client: httpx.AsyncClient
    counter: itertools.count[int]

    async def session(self) -> str:
        response = await self.client.post(
            "/sessions", json={"app_name": APP, "user_id": "u"}, headers={"Authorization": f"Bearer {CLIENT}"}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["session_id"])

    def agent(self) -> str:
        return f"agent-access-{next(self.counter):04d}"

    async def admin(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {TOKENS['ada']['token']}"}
        response = await self.client.request(method, url, json=body, headers=headers)
        assert response.is_success, response.text
        return dict(response.json())

    async def process(self, apps: tuple[str, ...] = (APP,)) -> str:
        """A live Panel process (an agent that synced) on a host of its own, with a live session of each of
        ``apps``; its host name."""
        host = f"host-access-{next(self.counter):04d}"
        tracked = [
            {"session_id": f"{host}-s{i}", "app_name": app, "started_at": "2026-01-01T00:00:00Z"}
            for i, app in enumerate(apps)
        ]
        body = {**sync_body(), "agent": {**sync_body()["agent"], "host": host}, "sessions": tracked}
        response = await self.client.post(
            f"/agents/{self.agent()}/sync", json=body, headers={"Authorization": f"Bearer {CLIENT}"}
        )
        assert response.status_code == 200, response.text
        return host


def sync_body() -> dict[str, Any]:
    return {
        "agent": {"host": "h", "pid": 1, "command": "panel serve", "versions": {}, "started_at": "2026-01-01T00:00:00Z"}
    }


Request = Callable[[Call], Awaitable[tuple[str, dict[str, Any] | None]]]


async def _announcement(call: Call) -> tuple[str, dict[str, Any] | None]:
    made = await call.admin("POST", "/announcements", {"message": "access test", "level": "info", "apps": [APP]})
    return f"/announcements/{made['id']}", None


async def _pending_kill(call: Call) -> tuple[str, dict[str, Any] | None]:
    made = await call.admin("POST", f"/sessions/{await call.session()}/kill", {"delay_s": 600})
    return f"/pending-kills/{made['pending_kill_id']}", None


def _with_config(template: str, body: dict[str, Any] | None = None) -> Request:
    """A request on a shared-config key of :data:`APP` that exists (version 1), fresh per call."""

    async def make(call: Call) -> tuple[str, dict[str, Any] | None]:
        key = f"k{next(call.counter)}"
        await call.admin("PUT", f"/config/{APP}/{key}", {"set": "by the access test"})
        return template.format(key=key), body

    return make


def _on_process(url: str, **body: Any) -> Request:
    async def make(call: Call) -> tuple[str, dict[str, Any] | None]:
        return url, {"host": await call.process(), **body}

    return make


async def _sid(call: Call, template: str) -> str:
    return template.format(sid=await call.session())


def _fixed(url: str, body: dict[str, Any] | None = None) -> Request:
    async def make(_: Call) -> tuple[str, dict[str, Any] | None]:
        return url, body

    return make


def _with_session(template: str, body: dict[str, Any] | None = None) -> Request:
    async def make(call: Call) -> tuple[str, dict[str, Any] | None]:
        return await _sid(call, template), body

    return make


def _with_agent(template: str, body: Callable[[], dict[str, Any]] | None = None) -> Request:
    async def make(call: Call) -> tuple[str, dict[str, Any] | None]:
        return template.format(agent=call.agent()), body() if body else None

    return make


REQUESTS: dict[tuple[str, str], Request] = {
    ("GET", "/sessions"): _fixed("/sessions"),
    ("POST", "/sessions"): _fixed("/sessions", {"app_name": APP}),
    ("DELETE", "/sessions/stale"): _fixed("/sessions/stale?older_than_minutes=1"),
    ("GET", "/sessions/{session_id}"): _with_session("/sessions/{sid}"),
    ("DELETE", "/sessions/{session_id}"): _with_session("/sessions/{sid}"),
    ("POST", "/sessions/{session_id}/kill"): _with_session("/sessions/{sid}/kill", {"reason": "access test"}),
    ("POST", "/apps/{app_name}/kill-all"): _fixed(f"/apps/{APP}/kill-all", {"reason": "access test"}),
    ("POST", "/sessions/{session_id}/heartbeat"): _with_session("/sessions/{sid}/heartbeat"),
    ("PUT", "/sessions/{session_id}/status"): _with_session("/sessions/{sid}/status", {"status": "running"}),
    ("POST", "/agents/{agent_id}/sync"): _with_agent("/agents/{agent}/sync", sync_body),
    ("GET", "/agents/{agent_id}/commands"): _with_agent("/agents/{agent}/commands?wait=0"),
    ("GET", "/agents"): _fixed("/agents"),
    ("GET", "/history"): _fixed("/history"),
    ("GET", "/audit"): _fixed("/audit"),
    ("GET", "/healthz"): _fixed("/healthz"),
    ("GET", "/metrics"): _fixed("/metrics"),
    ("GET", "/stats/timeline"): _fixed("/stats/timeline"),
    ("GET", "/stalls"): _fixed("/stalls"),
    ("GET", "/announcements"): _fixed("/announcements"),
    ("POST", "/announcements"): _fixed("/announcements", {"message": "access test", "level": "info", "apps": [APP]}),
    ("DELETE", "/announcements/{announcement_id}"): _announcement,
    ("GET", "/pending-kills"): _fixed("/pending-kills"),
    ("DELETE", "/pending-kills/{pending_kill_id}"): _pending_kill,
    ("POST", "/drain"): _on_process("/drain", deadline_s=600, message="access test"),
    ("POST", "/undrain"): _on_process("/undrain"),
    ("GET", "/policies"): _fixed("/policies"),
    ("PUT", "/policies"): _fixed("/policies", {}),
    ("GET", "/config"): _fixed("/config"),
    ("GET", "/config/{app}"): _fixed(f"/config/{APP}"),
    ("GET", "/config/{app}/{key}"): _with_config(f"/config/{APP}/{{key}}"),
    ("PUT", "/config/{app}/{key}"): _fixed(f"/config/{APP}/written", {"value": 1}),
    ("DELETE", "/config/{app}/{key}"): _with_config(f"/config/{APP}/{{key}}"),
    ("GET", "/config/{app}/{key}/history"): _with_config(f"/config/{APP}/{{key}}/history"),
    ("POST", "/config/{app}/{key}/revert"): _with_config(f"/config/{APP}/{{key}}/revert", {"version": 1}),
}
"""One valid request per route (the test fails for a route not listed here: add it, with what it needs)."""


def expected(guard: RoleGuard, caller: str) -> int:
    """The status the guard's declaration means for this caller: 200 (any 2xx), 401 or 403."""
    if guard.role == Role.PUBLIC:
        return 200
    if caller in ("no-token", "wrong-token"):
        return 401
    if guard.role == Role.CLIENT:
        return 200 if caller in ("client", "admin", "legacy-admin") else 403
    if caller == "client":
        return 200 if guard.client_too else 403
    role = {"viewer": Role.VIEWER, "admin": Role.ADMIN, "legacy-admin": Role.ADMIN}.get(caller, Role.OPERATOR)
    if role < guard.role:
        return 403
    if caller in ("operator-in-its-apps", "operator-outside-its-apps") and guard.role >= Role.OPERATOR:
        if guard.app_from is None:
            return 403  # an action on no one app (a drain) may reach apps the operator does not operate
        if caller == "operator-outside-its-apps":
            return 403
    return 200


def the_guard(app: FastAPI, method: str, path: str) -> RoleGuard:
    routes = [r for r in api_routes(app) if r.path_format == path and method in (r.methods or ())]
    assert len(routes) == 1, f"{method} {path}: {len(routes)} routes"
    guards = route_guards(routes[0])
    assert len(guards) == 1, f"{method} {path} declares {len(guards)} guards: give it one require_role(...)"
    return guards[0]


def operations(app: FastAPI) -> list[tuple[str, str]]:
    return [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]


async def test_every_route_declares_a_role_and_has_a_request_here(db_target: DatabaseTarget) -> None:
    async with serving(db_target.settings(client_token=CLIENT, tokens=TOKENS)) as (app, _):
        ops = operations(app)
        assert ops
        missing = sorted(set(ops) - set(REQUESTS))
        assert not missing, f"routes without a request in tests/integration/test_access.py REQUESTS: {missing}"
        assert not set(REQUESTS) - set(ops), "REQUESTS names routes the app no longer has"
        schema = app.openapi()
        for method, path in ops:
            guard = the_guard(app, method, path)  # exactly one guard per route
            assert schema["paths"][path][method.lower()][ACCESS_KEY] == guard.openapi
        # app.routes cannot hold a route that the OpenAPI schema leaves out (and so this table).
        hidden = [(r.methods, r.path) for r in api_routes(app) if not r.include_in_schema]
        assert not hidden, f"routes left out of the schema, so out of the access table: {hidden}"


async def test_every_route_for_every_caller(db_target: DatabaseTarget) -> None:
    settings = db_target.settings(client_token=CLIENT, admin_token=ADMIN_LEGACY, tokens=TOKENS)
    async with serving(settings) as (app, client):
        call = Call(client, itertools.count())
        seen: list[str] = []
        for method, path in operations(app):
            guard = the_guard(app, method, path)
            for caller, token in CALLERS.items():
                url, body = await REQUESTS[(method, path)](call)
                want = expected(guard, caller)
                before = await snapshot(app) if want != 200 else None
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                response = await client.request(method, url, json=body, headers=headers)
                got = 200 if response.is_success else response.status_code
                assert got == want, f"{method} {path} as {caller}: {response.status_code} {response.text[:200]}"
                if before is not None:
                    assert response.json()["detail"], (method, path, caller)
                    assert await snapshot(app) == before, f"{method} {path} as {caller} changed something"
                seen.append(f"{method} {path} {caller}")
        assert len(seen) == len(operations(app)) * len(CALLERS)


async def test_an_operators_kill_is_audited_under_its_owner(db_target: DatabaseTarget) -> None:
    async with serving(db_target.settings(client_token=CLIENT, tokens=TOKENS)) as (_, client):
        sid = await Call(client, itertools.count()).session()
        olga = {"Authorization": f"Bearer {TOKENS['olga']['token']}"}
        assert (await client.post(f"/sessions/{sid}/kill", headers=olga)).status_code == 200
        ada = {"Authorization": f"Bearer {TOKENS['ada']['token']}", "X-Session-Monitor-Actor": "UTF-8''Jos%C3%A9"}
        audit = (await client.get("/audit", headers=ada)).json()["entries"]
        assert [(e["actor"], e["action"], e["target"]) for e in audit] == [("olga", "kill", sid)]
        # The dashboard's way: one admin token, acting for a signed-in viewer, narrowed to viewer: refused.
        narrowed = {**ada, "X-Session-Monitor-Role": "viewer"}
        refused = await client.post(f"/apps/{APP}/kill-all", headers=narrowed)
        assert refused.status_code == 403 and "operator role" in refused.json()["detail"]
        as_operator_of_b = {**ada, "X-Session-Monitor-Role": "operator", "X-Session-Monitor-Apps": '["app-b"]'}
        refused = await client.post(f"/apps/{APP}/kill-all", headers=as_operator_of_b)
        assert refused.status_code == 403 and "app-b" in refused.json()["detail"]
        as_operator_of_a = {**ada, "X-Session-Monitor-Role": "operator", "X-Session-Monitor-Apps": '["app-a"]'}
        assert (await client.post(f"/apps/{APP}/kill-all", headers=as_operator_of_a)).status_code == 200
        audit = (await client.get("/audit", headers=ada)).json()["entries"]
        assert audit[0]["actor"] == "José via ada" and audit[0]["action"] == "kill_all"


@pytest.mark.parametrize("open_reads", [False, True])
async def test_without_role_tokens_staff_routes_stay_open(db_target: DatabaseTarget, open_reads: bool) -> None:
    """The prototype had no tokens: until a role token is set, kills and reads are open (as before roles)."""
    async with serving(db_target.settings(client_token=CLIENT, open_reads=open_reads)) as (_, client):
        sid = await Call(client, itertools.count()).session()
        assert (await client.get("/history")).status_code == 200
        assert (await client.post(f"/sessions/{sid}/kill")).status_code == 200
        # ... but a caller narrowed to viewer (a dashboard user with that role) is refused there too.
        viewer = await client.post(f"/sessions/{sid}/kill", headers={"X-Session-Monitor-Role": "viewer"})
        assert viewer.status_code == 403


async def test_an_operator_limited_to_apps_may_not_take_an_action_on_no_one_app(db_target: DatabaseTarget) -> None:
    """What a drain or an announcement to all declares (``OperatorDep``), on a route added for this test only."""
    async with serving(db_target.settings(tokens=TOKENS)) as (app, client):

        async def drain(principal: OperatorDep) -> dict[str, str]:
            return {"by": principal.actor}

        app.add_api_route("/test-only/drain", drain, methods=["POST"])
        for caller, status in (("operator-of-every-app", 200), ("admin", 200), ("operator-in-its-apps", 403),
                               ("viewer", 403), ("no-token", 401)):  # fmt: skip
            token = CALLERS[caller]
            response = await client.post(
                "/test-only/drain", headers={"Authorization": f"Bearer {token}"} if token else {}
            )
            assert response.status_code == status, (caller, response.text)
        refused = await client.post(
            "/test-only/drain", headers={"Authorization": f"Bearer {CALLERS['operator-in-its-apps']}"}
        )
        assert "on no one app" in refused.json()["detail"]


async def test_an_operator_limited_to_apps_announces_drains_and_cancels_for_its_apps_only(
    db_target: DatabaseTarget,
) -> None:
    """Announcements to its apps, drains of processes serving only its apps, cancels of its apps' kills."""
    async with serving(db_target.settings(client_token=CLIENT, tokens=TOKENS)) as (app, client):
        call = Call(client, itertools.count())
        olga = {"Authorization": f"Bearer {TOKENS['olga']['token']}"}

        async def post(url: str, body: Any, status: int, names: str | None = None) -> httpx.Response:
            before = await snapshot(app)
            response = await client.post(url, json=body, headers=olga)
            assert response.status_code == status, (url, body, response.text)
            if status >= 400:
                assert await snapshot(app) == before, (url, body)
            if names is not None:
                assert names in response.json()["detail"], response.text
            return response

        mixed, own = await call.process((APP, "app-b")), await call.process((APP,))  # live sessions of both apps
        note = {"message": "maintenance", "level": "info"}
        await post("/announcements", note, 403, "on no one app")  # to every page
        await post("/announcements", {**note, "apps": [APP, "app-b"]}, 403, "'app-b'")
        await post("/announcements", {**note, "apps": [APP], "level": "loud"}, 422)  # bad input stays 422
        mine = (await post("/announcements", {**note, "apps": [APP]}, 201)).json()["id"]
        to_all = await call.admin("POST", "/announcements", note)
        assert (await client.delete(f"/announcements/{to_all['id']}", headers=olga)).status_code == 403
        assert (await client.delete(f"/announcements/{mine}", headers=olga)).status_code == 200
        assert (await client.delete(f"/announcements/{mine}", headers=olga)).status_code == 404  # gone already

        await post("/drain", {"host": mixed, "deadline_s": 600}, 403, "'app-b'")  # it serves app-b too
        await post("/drain", {"app": APP, "deadline_s": 600}, 403, "'app-b'")  # so does one of APP's processes
        await post("/drain", {"host": await call.process(("app-b",))}, 403, "'app-b'")
        await post("/drain", {"host": await call.process(())}, 403, "on no one app")  # idle: it may serve any app
        await post("/drain", {"host": own, "deadline_s": 600}, 200)
        await post("/undrain", {"host": own}, 200)
        await post("/drain", {"host": "no-such-host"}, 404)
        await post("/drain", {"host": own, "app": APP}, 422)

        b_session = await client.post(
            "/sessions", json={"app_name": "app-b", "user_id": "u"}, headers={"Authorization": f"Bearer {CLIENT}"}
        )
        theirs = await call.admin("POST", f"/sessions/{b_session.json()['session_id']}/kill", {"delay_s": 600})
        ours = await call.admin("POST", f"/apps/{APP}/kill-all", {"delay_s": 600})
        assert (await client.delete(f"/pending-kills/{theirs['pending_kill_id']}", headers=olga)).status_code == 403
        assert (await client.delete(f"/pending-kills/{ours['pending_kill_id']}", headers=olga)).status_code == 200
        assert (await client.delete("/pending-kills/999999", headers=olga)).status_code == 404
