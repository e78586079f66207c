"""Aggregates for the dashboard's plots (viewer, like the history)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from session_monitor.server.deps import StoreDep, ViewerDep
from session_monitor.server.errors import READ_ADMIN
from session_monitor.server.routes._common import JSONBytes, SingleValuedQuery

router = APIRouter(tags=["stats"], dependencies=[SingleValuedQuery])

MAX_BUCKETS = 2000
"""Most points one timeline answer holds (``window_s / step_s``)."""


@router.get(
    "/stats/timeline", summary="Live sessions per app over time; sessions ended by reason", responses=READ_ADMIN
)
async def get_timeline(
    store: StoreDep,
    _: ViewerDep,
    window_s: Annotated[float, Query(gt=0, le=8 * 24 * 3600, description="How far back, in seconds.")] = 3600,
    step_s: Annotated[float, Query(ge=1, le=24 * 3600, description="Seconds between two points.")] = 60,
    max_apps: Annotated[int, Query(ge=1, le=100, description="Apps with a series of their own; the rest summed.")] = 10,
) -> JSONBytes:
    """``{window_s, step_s, times, apps: {app: [live sessions at each time]}, ended_by_reason: {reason: n}}``.

    A session counts as live at ``t`` if it had started and not yet ended; the apps beyond ``max_apps`` (fewest
    live sessions now) are summed under ``"(other apps)"``. ``ended_by_reason`` counts the ends within the window.
    """
    if window_s / step_s > MAX_BUCKETS:
        raise HTTPException(422, f"window_s / step_s must be at most {MAX_BUCKETS}")
    result = await store.timeline(window_s=window_s, step_s=step_s, max_apps=max_apps)
    return JSONBytes(result.as_dict(window_s, step_s))
