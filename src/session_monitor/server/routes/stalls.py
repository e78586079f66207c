"""Stalls of the Panel processes' IOLoops: ``GET /stalls`` (viewer), and how a sync's stalls are stored."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query

from session_monitor.protocol import MAX_SESSION_ID, SESSION_ID_PATTERN, StallList, SyncRequest, UTCTime
from session_monitor.server.deps import StallStoreDep, ViewerDep
from session_monitor.server.errors import READ_ADMIN
from session_monitor.server.metrics import Metrics
from session_monitor.server.routes._common import AppFilter, HostFilter, JSONBytes, Offset, SingleValuedQuery
from session_monitor.store.stalls import StallFilters, StallOutcome, StallStore

logger = logging.getLogger(__name__)
router = APIRouter(tags=["loop health"], dependencies=[SingleValuedQuery])

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
SessionFilter = Annotated[
    str | None, Query(max_length=MAX_SESSION_ID, pattern=SESSION_ID_PATTERN, description="Only this session's.")
]


async def record_stalls(store: StallStore, metrics: Metrics, agent_id: str, body: SyncRequest) -> StallOutcome:
    """Store the stalls of a sync that was applied; whatever happens here, the sync stands."""
    if not body.stalls:
        return StallOutcome()
    try:
        outcome = await store.record(agent_id, body.agent, body.stalls)
    except Exception as exc:
        logger.exception("agent %s: %d stall(s) could not be stored", agent_id, len(body.stalls))
        return StallOutcome(refused=len(body.stalls), error=f"stalls could not be stored ({type(exc).__name__})")
    for (host, pid), n in outcome.new_by_process.items():
        metrics.loop.stalls.labels(host, str(pid)).inc(n)
    if outcome.refused or outcome.dropped:
        metrics.loop.stalls_dropped.inc(outcome.refused + outcome.dropped)
    if outcome.refused:
        logger.warning("agent %s: %s", agent_id, outcome.error)
    return outcome


@router.get("/stalls", response_model=StallList, summary="Stalls of the Panel processes' IOLoops", responses=READ_ADMIN)
async def list_stalls(
    store: StallStoreDep,
    _: ViewerDep,
    app: AppFilter = None,
    session: SessionFilter = None,
    host: HostFilter = None,
    since: Annotated[UTCTime | None, Query(description="Only stalls that started at or after this time.")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> JSONBytes:
    """Each time a process's loop did not run its probe for ``SESSION_MONITOR_STALL_S``: when, how long, in
    which session's work, and the loop thread's stack (app frames first), newest first. ``dropped`` counts
    the stalls that agents and the server's caps dropped, oldest first."""
    rows, total, dropped = await store.list_stalls(
        StallFilters(app=app, session=session, host=host, since=since), limit=limit, offset=offset
    )
    return JSONBytes({"stalls": rows, "total": total, "dropped": dropped})
