"""Liveness and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from session_monitor._version import __version__
from session_monitor.protocol import API_VERSION, Health
from session_monitor.server.deps import AgentStoreDep, MetricsDep, StoreDep
from session_monitor.server.routes._common import JSONBytes

logger = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Health check")
async def healthz(store: StoreDep) -> JSONBytes:
    """200 when the database answers, 503 otherwise."""
    try:
        await store.ping()
    except Exception as exc:
        logger.warning("health check: database unavailable: %s", exc)
        return JSONBytes(
            {"status": "degraded", "database": "unavailable", "version": __version__, "api_version": API_VERSION},
            status_code=503,
        )
    return JSONBytes({"status": "ok", "database": "ok", "version": __version__, "api_version": API_VERSION})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(store: StoreDep, agent_store: AgentStoreDep, m: MetricsDep) -> Response:
    """Live sessions by app and state, kills, ends by reason, request latency, loop lag and stalls per process."""
    m.set_live_counts(await store.count_live())
    m.loop.set_live(await agent_store.list_agents())
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
