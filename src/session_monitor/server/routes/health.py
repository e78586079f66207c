"""Liveness and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from session_monitor._version import __version__
from session_monitor.protocol import API_VERSION, Health
from session_monitor.server.deps import AgentStoreDep, MetricsDep, MetricsReaderDep, PublicDep, StoreDep
from session_monitor.server.errors import WriteHealth, error_responses
from session_monitor.server.routes._common import JSONBytes

logger = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    response_model=Health,
    summary="Health check",
    responses={503: {"model": Health, "description": "Degraded: `database` says what is wrong."}},
)
async def healthz(store: StoreDep, request: Request, _: PublicDep) -> JSONBytes:
    """200 when the database answers and takes writes; 503 ``degraded`` with ``database`` saying what is wrong:
    ``unavailable`` (it does not answer) or ``disk_full`` (its last write failed for lack of disk space; reads
    still work, and the next write that succeeds clears it)."""
    database = "ok"
    try:
        await store.ping()
    except Exception as exc:
        logger.warning("health check: database unavailable: %s", exc)
        database = "unavailable"
    else:
        write_health: WriteHealth = request.app.state.write_health
        if write_health.disk_full_since is not None:
            database = "disk_full"
    body = {"status": "ok" if database == "ok" else "degraded", "database": database}
    return JSONBytes(
        {**body, "version": __version__, "api_version": API_VERSION}, status_code=200 if database == "ok" else 503
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        **error_responses(401, 403),
    },
)
async def metrics(store: StoreDep, agent_store: AgentStoreDep, m: MetricsDep, _: MetricsReaderDep) -> Response:
    """Live sessions by app and state, kills, ends by reason, leftovers of ended sessions, request latency, loop
    lag and stalls per process."""
    m.set_live_counts(await store.count_live())
    m.set_leftovers(await agent_store.count_leftovers())
    m.loop.set_live(await agent_store.list_agents())
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
