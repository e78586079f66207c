"""What a per-session client calls: register a session, heartbeat it, set its status, end it.

The prototype's protocol, one request per session event, as its ``session_client.py`` speaks it: paths, bodies,
answers and 404s are the prototype's. Our agent speaks the batched protocol of
:mod:`~session_monitor.server.routes.agents` instead; operators' endpoints are in
:mod:`~session_monitor.server.routes.sessions`, which is mounted before this router (its
``DELETE /sessions/stale`` must be matched before ``DELETE /sessions/{session_id}``).
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from session_monitor.protocol import HeartbeatResponse, SessionCreate, SessionCreated, StatusResponse, StatusUpdate
from session_monitor.server.deps import ClientDep, MetricsDep, StoreDep, as_actor
from session_monitor.server.errors import WRITE_CLIENT, WRITE_SESSION
from session_monitor.server.routes._common import SessionId, checked_session_id

router = APIRouter(tags=["sessions"])


@router.post("/sessions", response_model=SessionCreated, summary="Register a session", responses=WRITE_CLIENT)
async def create_session(body: SessionCreate, store: StoreDep, metrics: MetricsDep, _: ClientDep) -> SessionCreated:
    """Register a new live session; returns its id. The session starts ``idle``."""
    session_id = await store.create_session(
        body.app_name, body.user_id, host=body.host, pid=body.pid, session_id=str(uuid.uuid4())
    )
    metrics.sessions_registered.inc()
    return SessionCreated(session_id=session_id)


@router.delete(
    "/sessions/{session_id}", response_model=StatusResponse, summary="End a session", responses=WRITE_SESSION
)
async def delete_session(
    session_id: SessionId, store: StoreDep, metrics: MetricsDep, principal: ClientDep
) -> StatusResponse:
    """End a live session (``closed``, or ``killed`` if a kill was requested); it stays in the history."""
    reason = await store.end_session(checked_session_id(session_id), "closed", as_actor(principal))
    metrics.sessions_ended.labels(reason).inc()
    return StatusResponse(status="deleted")


@router.post(
    "/sessions/{session_id}/heartbeat", response_model=HeartbeatResponse, summary="Heartbeat", responses=WRITE_SESSION
)
async def heartbeat(session_id: SessionId, store: StoreDep, metrics: MetricsDep, _: ClientDep) -> HeartbeatResponse:
    """Mark the session alive; the answer says whether an operator asked to kill it."""
    kill = await store.heartbeat(checked_session_id(session_id))
    metrics.heartbeats.inc()
    return HeartbeatResponse(kill_requested=kill)


@router.put(
    "/sessions/{session_id}/status", response_model=StatusResponse, summary="Update status", responses=WRITE_SESSION
)
async def update_status(session_id: SessionId, body: StatusUpdate, store: StoreDep, _: ClientDep) -> StatusResponse:
    """Set the session's status and current task (also counts as a heartbeat)."""
    await store.update_status(checked_session_id(session_id), body.status, body.current_task)
    return StatusResponse(status="updated")
