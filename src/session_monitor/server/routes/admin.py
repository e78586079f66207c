"""History of ended sessions and the audit log (admin token required)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from session_monitor.protocol import AuditList, SessionList
from session_monitor.server.deps import AdminDep, StoreDep
from session_monitor.server.routes._common import AppFilter, HostFilter, JSONBytes, Offset, SearchFilter, UserFilter
from session_monitor.store import SessionFilters

router = APIRouter(tags=["history and audit"])

Limit = Annotated[int, Query(ge=1, le=10_000, description="Page size.")]
EndReasonFilter = Literal["closed", "browser_lost", "killed", "expired", "process_exit", "process_lost"]
ActionFilter = Literal["kill", "kill_all", "cleanup"]


@router.get("/history", response_model=SessionList, summary="Ended sessions")
async def list_history(
    store: StoreDep,
    _: AdminDep,
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


@router.get("/audit", response_model=AuditList, summary="Audit log of admin actions")
async def list_audit(
    store: StoreDep,
    _: AdminDep,
    action: Annotated[ActionFilter | None, Query(description="Only this action.")] = None,
    actor: Annotated[str | None, Query(max_length=100, pattern=r"^[\w .@:-]+$", description="Only this actor.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> JSONBytes:
    """Who did what to which target and when, newest first."""
    rows, total = await store.list_audit(limit=limit, offset=offset, action=action, actor=actor)
    return JSONBytes({"entries": rows, "total": total})
