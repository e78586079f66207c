"""Annotated dependency aliases shared by the routers.

Dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
dependency in its thread pool, a thread hop per dependency on every request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.routing import APIRoute, APIRouter
from starlette.routing import BaseRoute

from session_monitor.errors import SessionNotFound
from session_monitor.protocol import MAX_ACTOR, MAX_SESSION_ID, SESSION_ID_PATTERN
from session_monitor.server.access import (
    APPS_HEADER,
    ROLE_HEADER,
    Principal,
    actor_name,
    narrowed,
    refuse,
    refuse_app,
    unauthorized,
)
from session_monitor.server.commands import CommandHub
from session_monitor.server.metrics import Metrics
from session_monitor.server.scopes import (
    apps_of_announcement,
    apps_of_announcement_body,
    apps_of_drain_target,
    apps_of_pending_kill,
)
from session_monitor.server.security import bearer, client_addr
from session_monitor.server.settings import Settings
from session_monitor.server.tokens import Role
from session_monitor.store import Store
from session_monitor.store.agents import AgentStore
from session_monitor.store.config import ConfigStore
from session_monitor.store.repository import Actor
from session_monitor.store.stalls import StallStore
from session_monitor.text import printable

ACTOR_HEADER = "x-session-monitor-actor"
ACCESS_KEY = "x-session-monitor-access"
"""The OpenAPI extension naming each operation's role (``{"role": "operator", "per_app": true}``)."""
_SESSION_ID_RE = re.compile(SESSION_ID_PATTERN)
_EXT_PREFIX = "utf-8''"


def decode_actor(value: str) -> str:
    """The operator's name from an ``X-Session-Monitor-Actor`` value: plain text, or an RFC 8187 ext-value.

    ``UTF-8''Jos%C3%A9`` (charset case-insensitive) is percent-decoded as UTF-8 (what the dashboard sends for a
    name that is not plain ASCII); any other value is the name as it is. Raises ``ValueError`` when the bytes
    are not UTF-8.
    """
    if value[: len(_EXT_PREFIX)].lower() != _EXT_PREFIX:
        return value
    try:
        return unquote(value[len(_EXT_PREFIX) :], encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise ValueError("its UTF-8'' value is not percent-encoded UTF-8") from None


async def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def get_agent_store(request: Request) -> AgentStore:
    agent_store: AgentStore = request.app.state.agent_store
    return agent_store


async def get_stall_store(request: Request) -> StallStore:
    stall_store: StallStore = request.app.state.stall_store
    return stall_store


async def get_config_store(request: Request) -> ConfigStore:
    config_store: ConfigStore = request.app.state.config_store
    return config_store


async def get_hub(request: Request) -> CommandHub:
    hub: CommandHub = request.app.state.hub
    return hub


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def _claimed_actor(request: Request) -> str | None:
    claimed = request.headers.get(ACTOR_HEADER)
    if claimed is None:
        return None
    try:
        return printable(decode_actor(claimed.strip()).strip())[:MAX_ACTOR] or None
    except ValueError as exc:
        raise HTTPException(400, f"invalid {ACTOR_HEADER} header: {exc}") from None


def identify(request: Request, settings: Settings) -> Principal:
    """Who is calling: its token's grant (401 for a token that matches none), narrowed by its role headers."""
    table = settings.token_table
    token = bearer(request.headers.get("authorization"))
    claimed = _claimed_actor(request)
    remote = client_addr(request.scope)
    grant = table.match(token)
    # Until a role token is set, staff routes are open to every caller (the prototype had no tokens).
    open_role = None if table.staff_guarded else Role.ADMIN
    if grant is None:
        if token is not None and (table.staff_guarded or table.client_guarded):
            raise unauthorized("invalid token")
        principal = Principal("anonymous", actor_name(None, claimed), remote, open_role)
    elif grant.role == Role.CLIENT:
        principal = Principal("client", actor_name(grant, claimed), remote, open_role, owner=grant.owner)
    else:
        principal = Principal("staff", actor_name(grant, claimed), remote, grant.role, grant.apps, grant.owner)
    return narrowed(principal, request.headers.get(ROLE_HEADER), request.headers.get(APPS_HEADER))


AppOf = Callable[[Request], Awaitable[str | frozenset[str] | None]]
"""How a guard finds the app (or the apps) a request acts on, from its path, its body or a stored record; ``None``
for an action on every app (see :mod:`~session_monitor.server.scopes`)."""


async def app_from_path(request: Request) -> str:
    return str(request.path_params["app_name"])


async def app_of_session(request: Request) -> str:
    """The app of the session in the path, as stored (404 for a session that does not exist)."""
    session_id = str(request.path_params["session_id"])
    if len(session_id) > MAX_SESSION_ID or not _SESSION_ID_RE.match(session_id):
        raise SessionNotFound(session_id[:MAX_SESSION_ID])
    store: Store = request.app.state.store
    session = await store.get_session(session_id)
    return str(session["app_name"])


@dataclass(frozen=True, eq=False)
class RoleGuard:
    """The dependency every route declares (``require_role``): the least role it needs, and how it finds its app.

    ``client_too``: the client token passes as well (``/metrics``). ``open_reads``: ``SESSION_MONITOR_OPEN_READS``
    opens the route (the prototype's token-less ``monitor.py`` reads). Tests read these off ``route.dependant``.
    """

    role: Role
    app_from: AppOf | None = None
    client_too: bool = False
    open_reads: bool = False

    async def __call__(self, request: Request) -> Principal:
        if self.role == Role.PUBLIC:  # not even a wrong token is looked at
            return Principal("anonymous", "anonymous", client_addr(request.scope))
        settings = get_settings(request)
        principal = identify(request, settings)
        if self.open_reads and settings.open_reads:
            return principal
        if self.role == Role.CLIENT:
            return self._client(principal, settings)
        if self.client_too and principal.kind == "client":
            return principal
        if self.client_too and principal.kind == "anonymous" and settings.token_table.client_guarded:
            raise unauthorized("a role token or the client token required: send 'Authorization: Bearer <token>'")
        if principal.role is None or principal.role < self.role:
            raise refuse(principal, self.role, client_too=self.client_too)
        if principal.apps is not None and self.role >= Role.OPERATOR:  # reads are not per app
            # An action on no one app (a policy, an announcement to all) may reach other apps.
            acted_on = None if self.app_from is None else await self.app_from(request)
            if acted_on is None:
                raise refuse_app(principal, None)
            wanted = {acted_on} if isinstance(acted_on, str) else acted_on
            outside = sorted(app for app in wanted if not principal.may_act_on(app))
            if outside:
                raise refuse_app(principal, outside[0])
        return principal

    def _client(self, principal: Principal, settings: Settings) -> Principal:
        if not settings.token_table.client_guarded or principal.kind == "client":
            return principal
        if principal.kind == "staff" and principal.role == Role.ADMIN:
            return principal
        raise refuse(principal, Role.CLIENT, client_too=False)

    @property
    def openapi(self) -> dict[str, object]:
        """What the OpenAPI operation says of it (``x-session-monitor-access``)."""
        described: dict[str, object] = {"role": self.role.label}
        if self.app_from is not None:
            described["per_app"] = True
        if self.client_too:
            described["client_token"] = True
        if self.open_reads:
            described["open_reads"] = True
        return described


# Older FastAPI (the lowest pyproject.toml allows) resolves a callable object's string annotations in the
# callable's globals, which an instance has none of: give ``__call__`` the classes themselves (annotations are
# postponed in this module).
RoleGuard.__call__.__annotations__ = {"request": Request, "return": Principal}


def route_guards(route: APIRoute) -> list[RoleGuard]:
    """The guards a route declares, found in its dependency tree (a route must have exactly one)."""
    found: list[RoleGuard] = []
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if isinstance(dependant.call, RoleGuard):
            found.append(dependant.call)
        pending.extend(dependant.dependencies)
    return found


async def app_from_config_path(request: Request) -> str:
    """The shared-config app in the path (``/config/{app}/...``)."""
    return str(request.path_params["app"])


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every API route of the app, in included routers too (FastAPI >= 0.160 keeps an included router whole)."""
    found: list[APIRoute] = []
    pending: list[BaseRoute] = list(app.router.routes)
    while pending:
        route = pending.pop(0)
        included = getattr(route, "original_router", None)
        if isinstance(included, APIRouter):
            pending.extend(included.routes)
        elif isinstance(route, APIRoute):
            found.append(route)
    return found


def declare_access(app: FastAPI) -> None:
    """Give each OpenAPI operation an ``x-session-monitor-access`` from its route's guard (its one declaration),
    whenever the schema is built: routes included after this call are described too."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = build()
        if fresh:
            for route in api_routes(app):
                operations = schema["paths"].get(route.path_format, {})
                for guard in route_guards(route)[:1]:
                    for method in route.methods or ():
                        if method.lower() in operations:
                            operations[method.lower()][ACCESS_KEY] = guard.openapi
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def require_role(
    role: Role, *, app_from: AppOf | None = None, client_too: bool = False, open_reads: bool = False
) -> RoleGuard:
    """The guard of a route: ``Depends(require_role(Role.OPERATOR, app_from=app_from_path))``.

    ``app_from`` finds the app the request acts on (its path, its stored session, or its body:
    ``(await request.json())["app_name"]``); an operator limited to apps may call the route for those apps only,
    and not at all without ``app_from``.

    Declare it once per route, as its principal parameter or in ``dependencies=[...]``; the access test
    (tests/integration/test_access.py) fails for a route without one.
    """
    return RoleGuard(role, app_from, client_too, open_reads)


def as_actor(principal: Principal) -> Actor:
    return Actor(principal.actor, principal.remote_addr)


require_admin = require_role(Role.ADMIN)
require_reader = require_role(Role.VIEWER, open_reads=True)
require_client = require_role(Role.CLIENT)
"""The guards' names before roles, for routes written against them (prefer the ``*Dep`` aliases below)."""

StoreDep = Annotated[Store, Depends(get_store)]
AgentStoreDep = Annotated[AgentStore, Depends(get_agent_store)]
StallStoreDep = Annotated[StallStore, Depends(get_stall_store)]
ConfigStoreDep = Annotated[ConfigStore, Depends(get_config_store)]
HubDep = Annotated[CommandHub, Depends(get_hub)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

PublicDep = Annotated[Principal, Depends(require_role(Role.PUBLIC))]
ClientDep = Annotated[Principal, Depends(require_role(Role.CLIENT))]
"""Panel processes: the client token (or an admin token)."""
ViewerDep = Annotated[Principal, Depends(require_role(Role.VIEWER))]
"""Reads: sessions, agents, history, stats, stalls."""
ReaderDep = Annotated[Principal, Depends(require_role(Role.VIEWER, open_reads=True))]
"""Reads that ``SESSION_MONITOR_OPEN_READS`` opens (``GET /sessions``, ``/sessions/{id}``)."""
OperatorDep = Annotated[Principal, Depends(require_role(Role.OPERATOR))]
"""Operator actions on no one app: an operator limited to apps gets 403; give the guard an ``app_from``
(``require_role(Role.OPERATOR, app_from=...)``) when the request names its app."""
AnnouncerDep = Annotated[Principal, Depends(require_role(Role.OPERATOR, app_from=apps_of_announcement_body))]
"""Posting an announcement: an operator limited to apps must target its own apps (``apps``)."""
AnnouncementRemoverDep = Annotated[Principal, Depends(require_role(Role.OPERATOR, app_from=apps_of_announcement))]
"""Removing one: an operator limited to apps may remove those to its own apps only."""
KillCancellerDep = Annotated[Principal, Depends(require_role(Role.OPERATOR, app_from=apps_of_pending_kill))]
"""Cancelling a kill with notice: of a session (or all sessions) of one of the operator's apps."""
DrainerDep = Annotated[Principal, Depends(require_role(Role.OPERATOR, app_from=apps_of_drain_target))]
"""Draining or undraining: an operator limited to apps, only processes whose live sessions are all of its apps."""
AppOperatorDep = Annotated[Principal, Depends(require_role(Role.OPERATOR, app_from=app_from_path))]
"""Operator actions on the app in the path (``{app_name}``): an operator of other apps gets 403."""
SessionOperatorDep = Annotated[Principal, Depends(require_role(Role.OPERATOR, app_from=app_of_session))]
"""Operator actions on the session in the path: its stored app must be one of the operator's."""
AdminDep = Annotated[Principal, Depends(require_role(Role.ADMIN))]
"""Policies, cleanup, audit, config."""
MetricsReaderDep = Annotated[Principal, Depends(require_role(Role.VIEWER, client_too=True, open_reads=True))]
"""``/metrics`` (counts only): any role token, or the client token, so a scraper can hold the lesser one."""
ConfigReaderDep = Annotated[Principal, Depends(require_role(Role.VIEWER, client_too=True))]
"""Shared config, reads: any role token, or the client token (the app's own processes)."""
ConfigWriterDep = Annotated[
    Principal, Depends(require_role(Role.OPERATOR, app_from=app_from_config_path, client_too=True))
]
"""Shared config, writes: an operator of that app (or an admin), or the client token (the app's own processes)."""
