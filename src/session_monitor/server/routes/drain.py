"""Draining Panel processes for a deploy (admin): ``POST /drain`` and ``POST /undrain``, audit-logged.

The drain is stored on the agent rows and reaches each agent at once (its long-poll wakes, it syncs and
the answer carries ``drain``); the agent turns its readiness port unready and shows the message.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError

from session_monitor import defaults
from session_monitor.protocol import MAX_DRAIN_S, DrainRequest, DrainResponse, DrainTarget
from session_monitor.server.deps import DrainerDep, HubDep, as_actor
from session_monitor.server.errors import WRITE_SESSION
from session_monitor.server.routes._common import JSONBytes
from session_monitor.store.drains import DrainStore

router = APIRouter(tags=["drain"])


def _store(request: Request) -> DrainStore:
    store: DrainStore = request.app.state.drain_store
    return store


def _refuse(field: str, message: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


def _answer(processes: list[dict[str, Any]]) -> JSONBytes:
    return JSONBytes({"count": len(processes), "processes": processes})


@router.post("/drain", response_model=DrainResponse, summary="Drain Panel processes", responses=WRITE_SESSION)
async def drain(
    body: Annotated[DrainRequest, Body()], request: Request, hub: HubDep, principal: DrainerDep
) -> JSONBytes:
    """Mark the target's live processes draining: unready to load balancers, their sessions shown ``message``
    with a countdown, and ended as ``drained`` at the deadline. Draining again moves the deadline.

    404 when no live process matches (nothing changes); 422 for a deadline in the past or over 7 days. An operator
    limited to apps may drain only processes whose live sessions are all of its apps.
    """
    store = _store(request)
    now = store.store.clock()
    if body.at is not None:
        if body.at <= now:
            raise _refuse("at", "the deadline is in the past")
        if body.at - now > timedelta(seconds=MAX_DRAIN_S):
            raise _refuse("at", "the deadline is more than 7 days ahead")
        deadline = body.at
    else:
        deadline = now + timedelta(seconds=body.deadline_s or defaults.DRAIN_DEADLINE_S)
    message = body.message or defaults.DRAIN_MESSAGE
    processes = await store.set_drain(body, deadline=deadline, message=message, actor=as_actor(principal))
    hub.notify(p["agent_id"] for p in processes)
    return _answer(processes)


@router.post("/undrain", response_model=DrainResponse, summary="Undrain Panel processes", responses=WRITE_SESSION)
async def undrain(
    body: Annotated[DrainTarget, Body()], request: Request, hub: HubDep, principal: DrainerDep
) -> JSONBytes:
    """Make the target's live processes ready again; their sessions keep going and the countdown goes away. An
    operator limited to apps may undrain only processes whose live sessions are all of its apps."""
    processes = await _store(request).set_drain(body, deadline=None, message=None, actor=as_actor(principal))
    hub.notify(p["agent_id"] for p in processes)
    return _answer(processes)
