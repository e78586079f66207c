"""History of ended sessions (viewer) and the audit log (admin)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import AfterValidator

from session_monitor.protocol import MAX_ACTOR, PRINTABLE_FORMAT, AuditList, SessionList
from session_monitor.server.deps import AdminDep, StoreDep, ViewerDep
from session_monitor.server.errors import READ_ADMIN
from session_monitor.server.routes._common import (
    AppFilter,
    HostFilter,
    JSONBytes,
    Offset,
    SearchFilter,
    SingleValuedQuery,
    UserFilter,
)
from session_monitor.store import SessionFilters
from session_monitor.text import printable

router = APIRouter(tags=["history and audit"], dependencies=[SingleValuedQuery])

Limit = Annotated[int, Query(ge=1, le=10_000, description="Page size.")]
EndReasonFilter = Literal[
    "closed", "browser_lost", "killed", "expired", "process_exit", "process_lost", "drained", "refused"
]
ActionFilter = Literal[
    "kill",
    "kill_all",
    "kill_scheduled",
    "kill_cancelled",
    "cleanup",
    "announce",
    "unannounce",
    "drain",
    "undrain",
    "policies",
    "config_set",
    "config_delete",
    "config_revert",
]


@router.get("/history", response_model=SessionList, summary="Ended sessions", responses=READ_ADMIN)
async def list_history(
    store: StoreDep,
    _: ViewerDep,
    app: AppFilter = None,
    reason: Annotated[EndReasonFilter | None, Query(description="Only sessions that ended this way.")] = None,
    user: UserFilter = None,
    host: HostFilter = None,
    q: SearchFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> JSONBytes:
    """Ended sessions, most recently ended first, with end reason, start, end and duration."""
    rows, total = await store.list_sessions(
        SessionFilters(app=app, user=user, host=host, search=q, end_reason=reason),
        live=False,
        limit=limit,
        offset=offset,
    )
    return JSONBytes({"sessions": rows, "total": total})


@router.get("/audit", response_model=AuditList, summary="Audit log of admin actions", responses=READ_ADMIN)
async def list_audit(
    store: StoreDep,
    _: AdminDep,
    action: Annotated[ActionFilter | None, Query(description="Only this action.")] = None,
    actor: Annotated[
        str | None,
        Query(max_length=MAX_ACTOR, description="Only this actor.", json_schema_extra={"format": PRINTABLE_FORMAT}),
        AfterValidator(lambda v: v if v is None else printable(v)),
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> JSONBytes:
    """Who did what to which target and when, newest first."""
    rows, total = await store.list_audit(limit=limit, offset=offset, action=action, actor=actor)
    return JSONBytes({"entries": rows, "total": total})
