"""Annotated dependency aliases shared by the routers.

Dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
dependency in its thread pool, a thread hop per dependency on every request.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import unquote

from fastapi import Depends, HTTPException, Request

from session_monitor.protocol import MAX_ACTOR
from session_monitor.server.commands import CommandHub
from session_monitor.server.metrics import Metrics
from session_monitor.server.security import Principal, bearer, client_addr, token_matches
from session_monitor.server.settings import Settings
from session_monitor.store import Store
from session_monitor.store.agents import AgentStore
from session_monitor.store.repository import Actor
from session_monitor.store.stalls import StallStore
from session_monitor.text import printable

ACTOR_HEADER = "x-session-monitor-actor"
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


async def get_hub(request: Request) -> CommandHub:
    hub: CommandHub = request.app.state.hub
    return hub


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def _principal(request: Request, settings: Settings) -> Principal:
    token = bearer(request.headers.get("authorization"))
    claimed = request.headers.get(ACTOR_HEADER)
    if claimed is not None:
        try:
            claimed = printable(decode_actor(claimed.strip()).strip())[:MAX_ACTOR] or None
        except ValueError as exc:
            raise HTTPException(400, f"invalid {ACTOR_HEADER} header: {exc}") from None
    remote = client_addr(request.scope)
    admin, client = settings.admin_token, settings.client_token
    if admin is not None and token_matches(token, admin.get_secret_value()):
        return Principal("admin", claimed or "admin", remote)
    if client is not None and token_matches(token, client.get_secret_value()):
        return Principal("client", "client", remote)
    if token is not None and (admin is not None or client is not None):
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
    return Principal("anonymous", claimed or "anonymous", remote)


async def require_admin(request: Request) -> Principal:
    """Admin actions: the admin token when one is configured."""
    settings = get_settings(request)
    principal = _principal(request, settings)
    if settings.admin_token is not None and principal.role != "admin":
        if principal.role == "client":
            raise HTTPException(403, "this action needs the admin token; the client token is not enough")
        raise HTTPException(
            401,
            "admin token required: send 'Authorization: Bearer <SESSION_MONITOR_ADMIN_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


async def require_client(request: Request) -> Principal:
    """Registering and updating sessions: the client (or admin) token when a client token is configured."""
    settings = get_settings(request)
    principal = _principal(request, settings)
    if settings.client_token is not None and principal.role not in ("client", "admin"):
        raise HTTPException(
            401,
            "client token required: send 'Authorization: Bearer <SESSION_MONITOR_CLIENT_TOKEN>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


async def require_client_or_admin(request: Request) -> Principal:
    """Ending a session: its own client ends it on stop (the prototype's DELETE), or an admin does."""
    settings = get_settings(request)
    principal = _principal(request, settings)
    guarded = settings.admin_token is not None or settings.client_token is not None
    if guarded and principal.role == "anonymous":
        # Without a client token, registering is open, so a session's own client may end it too.
        if settings.client_token is None:
            return principal
        raise HTTPException(401, "client or admin token required", headers={"WWW-Authenticate": "Bearer"})
    return principal


async def require_reader(request: Request) -> Principal:
    """Reading sessions (users, tasks, hosts): the admin token when one is configured.

    The client token is not enough: it sits in the environment of every Panel process, which never needs
    to read other sessions, so a leaked one must not reveal who runs what. ``open_reads`` leaves the reads
    the prototype had open (its ``monitor.py`` lists without a token) open.
    """
    if get_settings(request).open_reads:
        return _principal(request, get_settings(request))
    return await require_admin(request)


async def require_metrics_reader(request: Request) -> Principal:
    """``/metrics`` (counts by app, state and reason; no users or tasks): the admin or the client token.

    A Prometheus scraper can then hold the lower-privilege client token instead of the admin one.
    """
    settings = get_settings(request)
    principal = _principal(request, settings)
    guarded = settings.admin_token is not None or settings.client_token is not None
    if guarded and principal.role == "anonymous" and not settings.open_reads:
        raise HTTPException(
            401,
            "admin or client token required: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def as_actor(principal: Principal) -> Actor:
    return Actor(principal.actor, principal.remote_addr)


StoreDep = Annotated[Store, Depends(get_store)]
AgentStoreDep = Annotated[AgentStore, Depends(get_agent_store)]
StallStoreDep = Annotated[StallStore, Depends(get_stall_store)]
HubDep = Annotated[CommandHub, Depends(get_hub)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
AdminDep = Annotated[Principal, Depends(require_admin)]
ClientDep = Annotated[Principal, Depends(require_client)]
EnderDep = Annotated[Principal, Depends(require_client_or_admin)]
ReaderDep = Annotated[Principal, Depends(require_reader)]
MetricsReaderDep = Annotated[Principal, Depends(require_metrics_reader)]
