"""The agent protocol: one batched sync per process and interval, and a long-poll that delivers kills at once."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from session_monitor.protocol import AGENT_ID_PATTERN, INT32_MAX, AgentList, CommandBatch, SyncRequest, SyncResponse
from session_monitor.server.deps import (
    AgentStoreDep,
    ClientDep,
    ConfigStoreDep,
    HubDep,
    MetricsDep,
    SettingsDep,
    StallStoreDep,
    ViewerDep,
)
from session_monitor.server.errors import READ_ADMIN, READ_CLIENT, WRITE_CLIENT
from session_monitor.server.lost import LossWatchDep
from session_monitor.server.policies import PolicyCache
from session_monitor.server.routes._common import JSONBytes, SingleValuedQuery
from session_monitor.server.routes.stalls import record_stalls
from session_monitor.store.notices import NoticeStore, revision

router = APIRouter(tags=["agents"], dependencies=[SingleValuedQuery])
logger = logging.getLogger(__name__)

MAX_WAIT_S = 60.0
"""Longest a command long-poll is held open."""

AgentIdPath = Annotated[str, Path(pattern=AGENT_ID_PATTERN, description="The agent's id (one per Panel process).")]


@router.post(
    "/agents/{agent_id}/sync", response_model=SyncResponse, summary="Agent sync (batched)", responses=WRITE_CLIENT
)
async def sync(
    agent_id: AgentIdPath,
    body: SyncRequest,
    agent_store: AgentStoreDep,
    stall_store: StallStoreDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    loss: LossWatchDep,
    request: Request,
    hub: HubDep,
    _: ClientDep,
) -> JSONBytes:
    """Upsert the sessions that changed, end those that ended, and heartbeat every live session of the agent.

    The answer carries the kills still pending for the agent's sessions (the fallback if a long-poll missed
    one) and ``resync: true`` when the server did not know the agent: the agent then sends a full sync.
    Stalls are stored after the sync, apart: ones over the agent's rate are refused (``stalls_refused``,
    ``stalls_error``) and the sync stands. It also carries the policies in force and, when a limit is set,
    the live sessions of the other processes against each limit (``others``): the agent decides from them
    and its own exact counts whether a new session may start.
    """
    result = await agent_store.sync(agent_id, body)
    if result.new_follow:
        hub.wake([agent_id])  # its long-poll may wait with the epoch this sync registered: let it read now
    loss.back(agent_id)
    metrics.heartbeats.inc()
    for end in body.ended:
        metrics.sessions_ended.labels(end.reason).inc()
    if body.agent.loop is not None:
        metrics.loop.lag.add(body.agent.host, body.agent.pid, body.agent.loop)
    outcome = await record_stalls(stall_store, metrics, agent_id, body)
    policies, others = await _policies_for(request, agent_id)
    return JSONBytes(
        {
            "policies": policies,
            "others": others,
            "resync": result.resync,
            "commands": result.commands,
            "sync_interval_s": settings.sync_interval_s,
            "server_time": agent_store.store.clock(),
            "stalls_refused": outcome.refused,
            "stalls_error": outcome.error,
            "notices": result.notices,
            "notices_rev": revision(result.notices),
            "drain": result.drain,
            **(result.config or {}),
        }
    )


async def _policies_for(request: Request, agent_id: str) -> tuple[Any, Any]:
    """The policies and the other processes' counts for this agent; ``None`` both if they cannot be read now
    (the sync itself stood; the agent keeps what it had)."""
    cache: PolicyCache = request.app.state.policy_cache
    try:
        snap = await cache.snapshot()
    except Exception:
        logger.exception("agent %s: policies not read for its sync answer", agent_id)
        return None, None
    return snap.stored.policies.model_dump(mode="json"), snap.others(agent_id)


@router.get(
    "/agents/{agent_id}/commands",
    response_model=CommandBatch,
    summary="Commands for an agent (long-poll)",
    responses=READ_CLIENT,
)
async def commands(
    agent_id: AgentIdPath,
    agent_store: AgentStoreDep,
    hub: HubDep,
    request: Request,
    loss: LossWatchDep,
    config_store: ConfigStoreDep,
    _: ClientDep,
    after: Annotated[
        int, Query(ge=0, le=INT32_MAX, description="The cursor of the previous answer (a command id).")
    ] = 0,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="Seconds to hold the request open.")] = 0,
    notices: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=r"^[0-9a-f]*$",
            description="The `notices_rev` the agent shows: answered (with `notices`) as soon as the set differs.",
        ),
    ] = None,
    config_after: Annotated[
        int | None, Query(ge=0, le=2**53 - 1, description="Shared-config cursor: also answer config changes.")
    ] = None,
    config_epoch: Annotated[
        int | None, Query(ge=0, le=INT32_MAX, description="The follow epoch of the agent's last sync.")
    ] = None,
) -> JSONBytes:
    """Commands queued after ``after``; with ``wait``, held open until one arrives or ``wait`` runs out.

    A long-poll whose client goes away (its process died: the kernel closed the socket) makes the agent a
    suspect: unless it polls or syncs again soon, its sessions end as ``process_lost`` (``server.lost``).
    """
    loop = asyncio.get_running_loop()
    loss.back(agent_id)
    deadline = loop.time() + wait
    event = hub.subscribe(agent_id)
    gone = asyncio.ensure_future(_disconnected(request))
    notice_store: NoticeStore = request.app.state.notice_store
    try:
        while True:
            found, cursor = await agent_store.fetch_commands(agent_id, after)
            answer: dict[str, Any] = {"commands": found, "cursor": cursor}
            if notices is not None:
                active = await notice_store.active_for(agent_id)
                if (rev := revision(active)) != notices:
                    answer |= {"notices": active, "notices_rev": rev}
            if config_after is not None and config_epoch is not None:
                config = await config_store.changes(agent_id, config_epoch, config_after)
                if config is not None and (config["config"] or config["config_full"]):
                    answer |= config  # else nothing new: keep waiting
            remaining = deadline - loop.time()
            if found or len(answer) > 2 or remaining <= 0 or hub.closing or gone.done():
                return JSONBytes(answer)
            # A cursor reset (database recreated) holds from now on: else the next command, numbered
            # below the stale cursor, was not seen and the long-poll slept through it.
            after = cursor
            woken = asyncio.ensure_future(event.wait())
            await asyncio.wait((woken, gone), timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            woken.cancel()
            event.clear()
    finally:
        if gone.done() and not hub.closing:
            loss.dropped(agent_id)
        gone.cancel()
        hub.unsubscribe(agent_id)


async def _disconnected(request: Request) -> None:
    """Return once the agent has gone (stopped, or its process exited): its long-poll must not outlive it.

    Else it held a task until ``wait`` ran out, and delayed the server's graceful shutdown as long.
    """
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:
        return


@router.get(
    "/agents", response_model=AgentList, summary="Agents (Panel processes): system status", responses=READ_ADMIN
)
async def list_agents(
    agent_store: AgentStoreDep,
    _: ViewerDep,
    include_exited: Annotated[bool, Query(description="Also list processes that have exited.")] = False,
) -> JSONBytes:
    """One row per Panel process: host, pid, command, versions, CPU, RSS, sessions and apps, last seen."""
    return JSONBytes({"agents": await agent_store.list_agents(include_exited=include_exited)})
