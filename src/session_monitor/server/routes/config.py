"""Shared app configuration: keys of an app, compare-and-set writes (``ETag`` / ``If-Match``), history, revert.

A ``PUT`` body is the JSON value itself (at most 256 KiB as compact JSON: 413 beyond, 422 if it is not JSON).
The ``ETag`` of a key is its version; ``If-Match`` makes a write conditional on it (``"0"``: the key must not
exist) and a stale one gets 412 with the current version and value. Every write is pushed at once to the
agents that follow the app (their command long-poll), on every replica.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Header, HTTPException, Path, Query, Request
from fastapi.responses import Response
from pydantic import AfterValidator

from session_monitor.protocol import (
    CONFIG_APP_PATTERN,
    CONFIG_KEY_PATTERN,
    MAX_APP_NAME,
    MAX_CONFIG_KEY,
    MAX_CONFIG_VALUE_BYTES,
    PRINTABLE_FORMAT,
    ConfigEntry,
    ConfigHistory,
    ConfigList,
    ConfigRevert,
)
from session_monitor.server.access import Principal
from session_monitor.server.deps import (
    ACTOR_HEADER,
    ConfigReaderDep,
    ConfigStoreDep,
    ConfigWriterDep,
    HubDep,
    decode_actor,
)
from session_monitor.server.errors import error_responses
from session_monitor.server.routes._common import JSONBytes, SingleValuedQuery
from session_monitor.store.config import Write
from session_monitor.store.repository import Actor
from session_monitor.text import printable

router = APIRouter(tags=["shared config"], dependencies=[SingleValuedQuery])

READ_CONFIG = error_responses(401, 403, 404, 422)
WRITE_CONFIG = {**error_responses(401, 403, 404, 413, 422, 507), 412: {"description": "`If-Match` is stale: the "
                "body has `current_version` and `current_value`; nothing was written."}}  # fmt: skip

AppPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_APP_NAME,
        pattern=CONFIG_APP_PATTERN,
        description="The config app's name.",
        json_schema_extra={"format": PRINTABLE_FORMAT},
    ),
    AfterValidator(printable),
]
KeyPath = Annotated[
    str, Path(min_length=1, max_length=MAX_CONFIG_KEY, pattern=CONFIG_KEY_PATTERN, description="The key.")
]
IF_MATCH_PATTERN = r'^\s*(\*|(W/)?"?\d{1,9}"?)?\s*$'
IfMatch = Annotated[
    str,
    Header(
        alias="If-Match",
        max_length=40,
        pattern=IF_MATCH_PATTERN,
        description='Write only if the stored version is this one (`"3"`; `"0"`: the key must not exist); '
        "absent, empty or `*`: whatever the version.",
    ),
]
_IF_MATCH_RE = re.compile(r'^(?:W/)?"?(\d{1,9})"?$')


def etag(version: int) -> str:
    return f'"{version}"'


def expected_version(if_match: str | None) -> int | None:
    if if_match is None or if_match.strip() in ("", "*"):
        return None
    match = _IF_MATCH_RE.match(if_match.strip())
    if match is None:
        raise HTTPException(400, 'invalid If-Match header: give the version as an ETag, e.g. "3"')
    return int(match.group(1))


def config_actor(request: Request, principal: Principal) -> Actor:
    """An operator by name; a Panel process (client token) as ``client:<what it says it is>``."""
    if principal.kind != "client":
        return Actor(principal.actor, principal.remote_addr)
    claimed = request.headers.get(ACTOR_HEADER) or ""
    try:
        shown = printable(decode_actor(claimed.strip())).strip()[:80]
    except ValueError:
        shown = ""
    return Actor(f"client:{shown}" if shown else "client", principal.remote_addr)


def _wire(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: entry[k] for k in ("app", "key", "value", "version", "revision", "updated_at", "updated_by")}


AGENT_HEADER = "x-session-monitor-agent"
"""Sent by an agent with its own writes: it applies the answer itself, its long-poll need not wake for it."""


def _push(write: Write, hub: Any, request: Request) -> None:
    writer = request.headers.get(AGENT_HEADER)
    hub.notify([agent_id for agent_id in write.agent_ids if agent_id != writer])


def _written(write: Write, hub: Any, request: Request) -> JSONBytes:
    _push(write, hub, request)
    return JSONBytes(_wire(write.entry), headers={"ETag": etag(write.entry["version"])})


@router.get("/config", summary="Apps with shared config", responses=READ_CONFIG)
async def list_config_apps(config_store: ConfigStoreDep, _: ConfigReaderDep) -> JSONBytes:
    """Every app that has config keys: its name, number of keys and last change."""
    return JSONBytes({"apps": await config_store.list_apps()})


@router.get("/config/{app}", response_model=ConfigList, summary="An app's shared config", responses=READ_CONFIG)
async def list_config(app: AppPath, config_store: ConfigStoreDep, _: ConfigReaderDep) -> JSONBytes:
    """Every key of the app (deleted ones left out), with value, version, who wrote it and when."""
    return JSONBytes({"app": app, "entries": await config_store.list_app(app)})


@router.get("/config/{app}/{key}", response_model=ConfigEntry, summary="One shared-config key", responses=READ_CONFIG)
async def get_config(app: AppPath, key: KeyPath, config_store: ConfigStoreDep, _: ConfigReaderDep) -> JSONBytes:
    """The key's value and version (also its ``ETag``); 404 when absent or deleted."""
    entry = await config_store.get(app, key)
    return JSONBytes(entry, headers={"ETag": etag(entry["version"])})


@router.put(
    "/config/{app}/{key}",
    response_model=ConfigEntry,
    summary="Write a shared-config key (compare-and-set with If-Match)",
    responses=WRITE_CONFIG,
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The value: any JSON document, at most 256 KiB as compact JSON.",
            "content": {"application/json": {"schema": {}}},
        }
    },
)
async def put_config(
    app: AppPath,
    key: KeyPath,
    request: Request,
    config_store: ConfigStoreDep,
    hub: HubDep,
    principal: ConfigWriterDep,
    if_match: IfMatch = "",
) -> JSONBytes:
    """Store the body as the key's next version. With ``If-Match``, only if the stored version is that one."""
    expected = expected_version(if_match)
    raw = await request.body()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"the body is not a JSON document: {exc}") from None
    text = orjson.dumps(value)
    if len(text) > MAX_CONFIG_VALUE_BYTES:
        raise HTTPException(413, f"value of {len(text)} bytes (compact JSON) exceeds {MAX_CONFIG_VALUE_BYTES} bytes")
    actor = config_actor(request, principal)
    write = await config_store.put(
        app, key, text.decode(), expected=expected, actor=actor, audit=principal.kind != "client"
    )
    return _written(write, hub, request)


@router.delete("/config/{app}/{key}", summary="Delete a shared-config key", responses=WRITE_CONFIG)
async def delete_config(
    app: AppPath,
    key: KeyPath,
    request: Request,
    config_store: ConfigStoreDep,
    hub: HubDep,
    principal: ConfigWriterDep,
    if_match: IfMatch = "",
) -> JSONBytes:
    """Delete the key (a new version, kept in the history: it can be reverted). 404 when already absent."""
    actor = config_actor(request, principal)
    write = await config_store.delete(
        app, key, expected=expected_version(if_match), actor=actor, audit=principal.kind != "client"
    )
    _push(write, hub, request)
    version = write.entry["version"]
    body = {"status": "deleted", "version": version, "revision": write.entry["revision"]}
    return JSONBytes(body, headers={"ETag": etag(version)})


@router.get(
    "/config/{app}/{key}/history",
    response_model=ConfigHistory,
    summary="Every version of a shared-config key",
    responses=READ_CONFIG,
)
async def config_history(
    app: AppPath,
    key: KeyPath,
    config_store: ConfigStoreDep,
    _: ConfigReaderDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="Page size.")] = 100,
    offset: Annotated[int, Query(ge=0, le=10**9, description="Versions to skip.")] = 0,
) -> JSONBytes:
    """Versions newest first with value, action, actor and time, as far back as the retention keeps them."""
    return JSONBytes(await config_store.history(app, key, limit=limit, offset=offset))


@router.post(
    "/config/{app}/{key}/revert",
    response_model=ConfigEntry,
    summary="Revert a shared-config key to an earlier version",
    responses=WRITE_CONFIG,
)
async def revert_config(
    app: AppPath,
    key: KeyPath,
    body: Annotated[ConfigRevert, Body()],
    request: Request,
    config_store: ConfigStoreDep,
    hub: HubDep,
    principal: ConfigWriterDep,
    if_match: IfMatch = "",
) -> Response:
    """Write the value of ``version`` as a new version (a reverted delete deletes). 404: no such version."""
    actor = config_actor(request, principal)
    write = await config_store.revert(
        app, key, body.version, expected=expected_version(if_match), actor=actor, audit=principal.kind != "client"
    )
    if write.entry["deleted"]:
        _push(write, hub, request)
        version = write.entry["version"]
        answer = {"status": "deleted", "version": version, "revision": write.entry["revision"]}
        return JSONBytes(answer, headers={"ETag": etag(version)})
    return _written(write, hub, request)
