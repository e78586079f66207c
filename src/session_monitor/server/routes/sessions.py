"""The operators' session endpoints: list, look up, kill, kill all of an app, end the silent ones.

The prototype's own (paths, bodies and answers unchanged), with ``GET /sessions/{id}`` and the listing's
``changed_since`` added. What a per-session client calls (register, heartbeat, status, end) is in
:mod:`~session_monitor.server.routes.session_client`; the agent's batched protocol in
:mod:`~session_monitor.server.routes.agents`. This router is mounted first: ``DELETE /sessions/stale`` must be
matched before the client's ``DELETE /sessions/{session_id}``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import AfterValidator
from starlette.background import BackgroundTask

from session_monitor import defaults
from session_monitor.errors import SessionNotFound
from session_monitor.protocol import (
    MAX_APP_NAME,
    PRINTABLE_FORMAT,
    CleanupResponse,
    KillAllResponse,
    KillRequest,
    KillResponse,
    SessionList,
    SessionOut,
    UTCTime,
)
from session_monitor.server.deps import (
    AdminDep,
    AppOperatorDep,
    HubDep,
    MetricsDep,
    ReaderDep,
    SessionOperatorDep,
    StoreDep,
    as_actor,
)
from session_monitor.server.errors import READ, READ_SESSION, WRITE_CLIENT
from session_monitor.server.routes._common import (
    AppFilter,
    HostFilter,
    JSONBytes,
    JSONParts,
    Offset,
    SearchFilter,
    SessionId,
    SingleValuedQuery,
    UserFilter,
    checked_session_id,
)
from session_monitor.server.routes.notices import WRITE_NOTICE, kill_deadline, notice_store, notices_changed
from session_monitor.store import SessionFilters
from session_monitor.store.changes import CURSOR_OVERLAP
from session_monitor.text import printable

router = APIRouter(tags=["sessions"], dependencies=[SingleValuedQuery])

MAX_CLEANUP_MINUTES = 60 * 24 * 366
"""``older_than_minutes`` above a year is refused instead of overflowing."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
StateFilter = Literal["idle", "running", "disconnected", "stale"]


@router.get("/sessions", response_model=SessionList, summary="List live sessions", responses=READ)
async def list_sessions(
    store: StoreDep,
    _: ReaderDep,
    app: AppFilter = None,
    status: Annotated[StateFilter | None, Query(description="Only sessions in this state.")] = None,
    user: UserFilter = None,
    host: HostFilter = None,
    q: SearchFilter = None,
    limit: Annotated[int | None, Query(ge=1, le=100_000, description="Page size; all when absent.")] = None,
    offset: Offset = 0,
    changed_since: Annotated[
        UTCTime | None,
        Query(
            description="A `cursor` from an earlier answer: only sessions changed since then, ended ones "
            "included (their `state` is `ended`: drop them), plus `agent_last_seen`. Combines with app, "
            "user and host, not with status, q, limit or offset."
        ),
    ] = None,
) -> Response:
    """Live sessions, newest first, with computed ``duration_seconds``, ``is_stale`` and ``state``."""
    filters = SessionFilters(app=app, state=status, user=user, host=host, search=q)
    cursor = store.clock() - CURSOR_OVERLAP
    if changed_since is None:
        # Rows rendered as JSON by the database; a long listing is streamed, chunk by chunk.
        listing = await store.list_sessions_json(filters, limit=limit, offset=offset)
        body = listing.document({"cursor": cursor})
        if isinstance(body, tuple):
            return JSONParts(body)
        # The background task frees the read connection even if the client leaves before the body starts.
        return StreamingResponse(body, media_type="application/json", background=BackgroundTask(listing.close))
    clashing = [name for name, value in (("status", status), ("q", q), ("limit", limit), ("offset", offset)) if value]
    if clashing:
        raise HTTPException(422, f"changed_since cannot be combined with {', '.join(clashing)}")
    # Nothing changed before the epoch; an earlier cursor means "everything" and must not underflow the
    # stale-window arithmetic (0001-01-01 minus the stale threshold).
    changes = await store.list_changes(max(changed_since, EPOCH), filters)
    return JSONBytes(
        {
            "sessions": changes.sessions,
            "total": changes.total,
            "cursor": changes.cursor,
            "agent_last_seen": changes.agent_last_seen,
        }
    )


@router.delete("/sessions/stale", response_model=CleanupResponse, summary="End silent sessions", responses=WRITE_CLIENT)
async def cleanup_stale_sessions(
    store: StoreDep,
    metrics: MetricsDep,
    principal: AdminDep,
    older_than_minutes: Annotated[
        int, Query(ge=1, le=MAX_CLEANUP_MINUTES, description="End sessions silent for longer than this.")
    ] = defaults.CLEANUP_OLDER_THAN_MINUTES,
) -> CleanupResponse:
    """End every live session without a heartbeat for ``older_than_minutes`` as ``expired`` (kept as history)."""
    count = await store.end_silent_sessions(timedelta(minutes=older_than_minutes), as_actor(principal), audit=True)
    metrics.sessions_ended.labels("expired").inc(count)
    return CleanupResponse(deleted_count=count)


@router.get(
    "/sessions/{session_id}", response_model=SessionOut, summary="One session, live or ended", responses=READ_SESSION
)
async def get_session(session_id: SessionId, store: StoreDep, _: ReaderDep) -> Response:
    return Response(await store.get_session_json(checked_session_id(session_id)), media_type="application/json")


@router.post(
    "/sessions/{session_id}/kill",
    response_model=KillResponse,
    response_model_exclude_none=True,  # a kill now answers exactly as the prototype's did
    summary="Kill a session",
    responses=WRITE_NOTICE,
)
async def kill_session(
    session_id: SessionId,
    request: Request,
    store: StoreDep,
    hub: HubDep,
    metrics: MetricsDep,
    principal: SessionOperatorDep,
    body: Annotated[KillRequest | None, Body()] = None,
) -> KillResponse:
    """Ask a session to end; its client learns it on its next contact. Recorded in the audit log.

    With ``delay_s`` or ``at``: a kill with notice. The page shows a countdown; the kill runs at the deadline
    unless cancelled (``DELETE /pending-kills/{id}``)."""
    deadline = kill_deadline(body, store.clock())
    if deadline is not None:
        assert body is not None
        pending = await notice_store(request).schedule_kill(
            session_id=checked_session_id(session_id), app_name=None, deadline=deadline, reason=body.reason,
            actor=as_actor(principal),
        )  # fmt: skip
        if pending is None:
            raise SessionNotFound(session_id)
        await notices_changed(request, hub)
        return KillResponse(status="kill_scheduled", pending_kill_id=pending["id"], deadline=deadline)
    session = await store.request_kill(
        checked_session_id(session_id), as_actor(principal), body.reason if body else None
    )
    if session["agent_id"]:
        hub.notify([session["agent_id"]])
    metrics.kills.labels("session").inc()
    return KillResponse(status="kill_requested")


@router.post(
    "/apps/{app_name:anypath}/kill-all",
    response_model=KillAllResponse,
    response_model_exclude_none=True,
    summary="Kill all of an app",
    responses=WRITE_NOTICE,
)
async def kill_all_sessions(
    app_name: Annotated[
        str,
        Path(
            min_length=1,
            max_length=MAX_APP_NAME,
            description="URL-encoded app name; may contain / ? #.",
            json_schema_extra={"format": PRINTABLE_FORMAT},
        ),
        AfterValidator(printable),
    ],
    request: Request,
    store: StoreDep,
    hub: HubDep,
    metrics: MetricsDep,
    principal: AppOperatorDep,
    body: Annotated[KillRequest | None, Body()] = None,
) -> KillAllResponse:
    """Ask every live session of the app to end; returns how many. Recorded in the audit log.

    With ``delay_s`` or ``at``: a kill with notice. Its pages (and those opened meanwhile) show a countdown;
    at the deadline every live session of the app is killed, unless cancelled. An app never seen is 404."""
    deadline = kill_deadline(body, store.clock())
    if deadline is not None:
        assert body is not None
        pending = await notice_store(request).schedule_kill(
            session_id=None, app_name=app_name, deadline=deadline, reason=body.reason, actor=as_actor(principal)
        )
        if pending is None:
            raise HTTPException(404, f"unknown app {app_name!r}")
        await notices_changed(request, hub)
        return KillAllResponse(
            killed_count=0, pending_kill_id=pending["id"], deadline=deadline, live_count=pending["live_count"]
        )
    outcome = await store.request_kill_app(app_name, as_actor(principal), body.reason if body else None)
    hub.notify(outcome.agent_ids)
    metrics.kills.labels("app").inc(outcome.killed_count)
    return KillAllResponse(killed_count=outcome.killed_count)
