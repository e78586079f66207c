"""Notices for the users of live pages: announcements (banners) and kills with notice (countdowns)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError

from session_monitor.protocol import (
    INT32_MAX,
    MAX_NOTICE_AHEAD_S,
    AnnouncementCreate,
    AnnouncementList,
    AnnouncementOut,
    KillRequest,
    PendingKillList,
    StatusResponse,
)
from session_monitor.server.commands import CommandHub
from session_monitor.server.deps import (
    AnnouncementRemoverDep,
    AnnouncerDep,
    HubDep,
    KillCancellerDep,
    ViewerDep,
    as_actor,
)
from session_monitor.server.errors import READ_ADMIN, WRITE_SESSION, error_responses
from session_monitor.server.notices import PendingKillRunner, broadcast
from session_monitor.server.routes._common import JSONBytes, SingleValuedQuery
from session_monitor.store.notices import NoticeConflict, NoticeStore

router = APIRouter(tags=["notices"], dependencies=[SingleValuedQuery])

WRITE_NOTICE = {**WRITE_SESSION, **error_responses(409)}
NoticeId = Annotated[int, Path(ge=1, le=INT32_MAX, description="The id the creation answered.")]


def notice_store(request: Request) -> NoticeStore:
    store: NoticeStore = request.app.state.notice_store
    return store


def kill_runner(request: Request) -> PendingKillRunner:
    runner: PendingKillRunner = request.app.state.kill_runner
    return runner


def _refuse(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


def check_ahead(field: str, when: datetime, now: datetime) -> datetime:
    """``when`` must lie in the future, at most 7 days ahead: else a 422 naming ``field``."""
    if when <= now:
        raise _refuse(
            field, f"must be in the future (it is {when.isoformat()}, the server's time is {now.isoformat()})"
        )
    if when > now + timedelta(seconds=MAX_NOTICE_AHEAD_S):
        raise _refuse(field, "must be at most 7 days ahead")
    return when


def kill_deadline(body: KillRequest | None, now: datetime) -> datetime | None:
    """The deadline of a kill with notice (``delay_s`` or ``at``), ``None`` for a kill now."""
    if body is None or (body.delay_s is None and body.at is None):
        return None
    if body.delay_s is not None and body.at is not None:
        raise _refuse("at", "give delay_s or at, not both")
    if body.delay_s is not None:
        return now + timedelta(seconds=body.delay_s)
    assert body.at is not None
    return check_ahead("at", body.at, now)


async def notices_changed(request: Request, hub: CommandHub) -> None:
    """After a commit that changed the active set: wake the agents, and the runner for a new deadline."""
    kill_runner(request).changed.set()
    await broadcast(notice_store(request), hub)


@router.post(
    "/announcements",
    response_model=AnnouncementOut,
    status_code=201,
    summary="Post an announcement",
    responses=WRITE_NOTICE,
)
async def post_announcement(
    body: AnnouncementCreate, request: Request, hub: HubDep, principal: AnnouncerDep
) -> JSONBytes:
    """A banner in every targeted live page (all pages without a target), and in pages opened while it is active,
    until removed or ``until``. Text only, ≤ 500 characters. Recorded in the audit log. An operator limited to
    apps must name its own apps in ``apps``."""
    store = notice_store(request)
    now = store.store.clock()
    if body.until is not None:
        check_ahead("until", body.until, now)
    unknown = await store.unknown_targets(apps=body.apps, hosts=body.hosts, session_ids=body.session_ids)
    if unknown is not None:
        raise HTTPException(404, unknown)
    try:
        row = await store.announce(body.model_dump(), as_actor(principal))
    except NoticeConflict as exc:
        raise HTTPException(409, str(exc)) from None
    await notices_changed(request, hub)
    return JSONBytes(row, status_code=201)


@router.get("/announcements", response_model=AnnouncementList, summary="Announcements", responses=READ_ADMIN)
async def list_announcements(
    request: Request,
    _: ViewerDep,
    include_inactive: Annotated[bool, Query(description="Also removed and expired ones (newest first).")] = False,
) -> JSONBytes:
    """The active announcements, newest first."""
    rows = await notice_store(request).list_announcements(include_inactive=include_inactive)
    return JSONBytes({"announcements": rows})


@router.delete(
    "/announcements/{announcement_id}",
    response_model=StatusResponse,
    summary="Remove an announcement",
    responses=WRITE_SESSION,
)
async def remove_announcement(
    announcement_id: NoticeId, request: Request, hub: HubDep, principal: AnnouncementRemoverDep
) -> StatusResponse:
    """Take an announcement away from every page (kept as history). Recorded in the audit log. An operator
    limited to apps may remove announcements to its apps only."""
    if await notice_store(request).remove_announcement(announcement_id, as_actor(principal)) is None:
        raise HTTPException(404, f"no active announcement {announcement_id}")
    await notices_changed(request, hub)
    return StatusResponse(status="removed")


@router.get("/pending-kills", response_model=PendingKillList, summary="Kills with notice", responses=READ_ADMIN)
async def list_pending_kills(
    request: Request,
    _: ViewerDep,
    include_done: Annotated[bool, Query(description="Also cancelled and carried-out ones.")] = False,
) -> JSONBytes:
    """Kills given notice (``delay_s`` or ``at`` on a kill), soonest deadline first."""
    return JSONBytes({"pending_kills": await notice_store(request).list_pending_kills(include_done=include_done)})


@router.delete(
    "/pending-kills/{pending_kill_id}",
    response_model=StatusResponse,
    summary="Cancel a kill with notice",
    responses=WRITE_SESSION,
)
async def cancel_pending_kill(
    pending_kill_id: NoticeId, request: Request, hub: HubDep, principal: KillCancellerDep
) -> StatusResponse:
    """Cancel a kill before its deadline: the countdowns go away, the sessions live on. Recorded in the audit log.
    An operator limited to apps may cancel kills of its apps' sessions only."""
    if await notice_store(request).cancel_kill(pending_kill_id, as_actor(principal)) is None:
        raise HTTPException(404, f"no pending kill {pending_kill_id} (unknown, cancelled or carried out)")
    await notices_changed(request, hub)
    return StatusResponse(status="cancelled")
