"""``create_app(settings)``: the FastAPI application. Its lifespan owns the database and the reaper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from session_monitor._version import __version__
from session_monitor.errors import SessionNotFound
from session_monitor.server.commands import CommandHub
from session_monitor.server.coordination import PgCoordinator
from session_monitor.server.metrics import LatencyMiddleware, Metrics
from session_monitor.server.reaper import ReapResult, run_reaper
from session_monitor.server.routes import admin, agents, health, session_client, sessions, stalls, stats
from session_monitor.server.security import GuardMiddleware
from session_monitor.server.settings import Settings
from session_monitor.store import Database, Store
from session_monitor.store.agents import AgentStore
from session_monitor.store.repository import utcnow
from session_monitor.store.stalls import StallStore

logger = logging.getLogger(__name__)

DESCRIPTION = """
Sessions of Panel apps register here, report their status and learn when an
operator kills them. The first endpoints are wire-compatible with the
prototype's; with tokens configured, admin actions need
`Authorization: Bearer <admin token>` and client calls the client token.
"""


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may be large, and it is someone else's text.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": _validation_message(errors), "errors": errors}, status_code=422)

    @app.exception_handler(SessionNotFound)
    async def _not_found(_: Request, exc: SessionNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(sqlalchemy.exc.DBAPIError)
    async def _database(_: Request, exc: sqlalchemy.exc.DBAPIError) -> JSONResponse:
        logger.error("database error: %s", exc.orig if exc.orig is not None else exc)
        return JSONResponse(
            {"detail": "database unavailable, try again"}, status_code=503, headers={"Retry-After": "1"}
        )

    @app.exception_handler(OSError)
    async def _os(_: Request, exc: OSError) -> JSONResponse:
        logger.error("database connection failed: %s", exc)
        return JSONResponse(
            {"detail": "database unavailable, try again"}, status_code=503, headers={"Retry-After": "1"}
        )


def create_app(settings: Settings | None = None, *, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """Build the app. Nothing touches the database until the lifespan starts."""
    settings = settings or Settings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.resolved_database_url, schema=settings.database_schema)
        db.writer.on_batch = metrics.write_batch.observe
        try:
            await db.upgrade()
        except BaseException:
            await db.close()  # a refused start must not leak its pooled connections
            raise
        store = Store(db, stale_after_s=settings.stale_after_s, clock=clock)
        app.state.store = store
        app.state.agent_store = agent_store = AgentStore(store)
        app.state.stall_store = StallStore(
            store,
            max_per_agent=settings.max_stalls_per_agent,
            max_total=settings.max_stalls_total,
            max_per_minute=settings.max_stalls_per_minute,
        )
        logger.info("session monitor %s using %s", __version__, db.describe())
        stop = asyncio.Event()
        reaper: asyncio.Task[None] | None = None
        coordinator: PgCoordinator | None = None
        if db.dialect == "postgresql":
            # Other replicas may share this database: their kills must wake our long-polls, and one reaps.
            coordinator = PgCoordinator(
                db.url.set(drivername="postgresql").render_as_string(hide_password=False),
                hub,
                schema=settings.database_schema,
                on_wake=metrics.replica_wakeups.inc,
            )
            await coordinator.start()
        app.state.coordinator = coordinator

        def count_pass(result: ReapResult) -> None:
            metrics.reaper_passes.inc()
            metrics.sessions_ended.labels("expired").inc(result.expired)

        async def may_reap() -> bool:
            assert coordinator is not None
            leading = await coordinator.try_lead()
            metrics.reaper_leader.set(1 if leading else 0)
            return leading

        if settings.run_reaper:
            if coordinator is None:
                metrics.reaper_leader.set(1)
            reaper = asyncio.create_task(
                run_reaper(
                    store,
                    agent_store=agent_store,
                    interval_s=settings.reaper_interval_s,
                    stop=stop,
                    expire_after_s=settings.expire_after_s,
                    history_retention_s=settings.history_retention_s,
                    audit_retention_s=settings.audit_retention_s,
                    on_result=count_pass,
                    gate=may_reap if coordinator is not None else None,
                ),
                name="session-monitor-reaper",
            )
        try:
            yield
        finally:
            hub.close()
            stop.set()
            if reaper is not None:
                await reaper
            if coordinator is not None:
                await coordinator.close()
            await db.close()

    app = FastAPI(title="panel-session-monitor", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.hub = hub = CommandHub()
    _install_error_handlers(app)
    app.include_router(sessions.router)  # first: DELETE /sessions/stale before DELETE /sessions/{session_id}
    app.include_router(session_client.router)
    app.include_router(agents.router)
    app.include_router(admin.router)
    app.include_router(health.router)
    app.include_router(stats.router)
    app.include_router(stalls.router)
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_sync_body_bytes=settings.max_sync_body_bytes,
        trusted_origins=frozenset(settings.trusted_origins),
        host_allowlist=settings.host_allowlist,
    )
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app
