"""``create_app(settings)``: the FastAPI application. Its lifespan owns the database and the reaper."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime

from fastapi import FastAPI

from session_monitor import defaults
from session_monitor._version import __version__
from session_monitor.server.commands import CommandHub
from session_monitor.server.coordination import PgCoordinator
from session_monitor.server.deps import declare_access
from session_monitor.server.errors import COMMON_ERRORS, WriteHealth, error_responses, install_error_handlers
from session_monitor.server.lost import LossWatch, run_loss_watch
from session_monitor.server.metrics import LatencyMiddleware, Metrics
from session_monitor.server.notices import PendingKillRunner
from session_monitor.server.policies import PolicyCache
from session_monitor.server.reaper import ReapResult, run_reaper
from session_monitor.server.routes import (
    admin,
    agents,
    config,
    drain,
    health,
    notices,
    policies,
    session_client,
    sessions,
    stalls,
    stats,
)
from session_monitor.server.security import GuardMiddleware
from session_monitor.server.settings import Settings
from session_monitor.store import Database, Store
from session_monitor.store.agents import AgentStore
from session_monitor.store.config import ConfigStore
from session_monitor.store.drains import DrainStore
from session_monitor.store.notices import Fired, NoticeStore
from session_monitor.store.policies import PolicyStore
from session_monitor.store.repository import utcnow
from session_monitor.store.stalls import StallStore

logger = logging.getLogger(__name__)

DESCRIPTION = """
Sessions of Panel apps register here, report their status and learn when an
operator kills them. The first endpoints are wire-compatible with the
prototype's. With tokens configured, each operation needs the role its
`x-session-monitor-access` names (`viewer` < `operator` < `admin`; an operator
may be limited to some apps) in `Authorization: Bearer <token>`, and client
calls the client token. A caller may narrow its own role for one request with
`X-Session-Monitor-Role` and `X-Session-Monitor-Apps` (a JSON array).

Errors are `{"detail": "<what is wrong>"}` (a 422 adds `errors`, one entry per field). Free text has
`format: printable`: no control, surrogate or unassigned Unicode code point. 503 means the database does
not answer (retry); 507 that its disk is full (writes refused until space is freed; `/healthz` says so).
"""


def create_app(settings: Settings | None = None, *, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    """Build the app. Nothing touches the database until the lifespan starts."""
    settings = settings or Settings()
    metrics = Metrics()

    def count_fired(fired: Fired) -> None:
        metrics.kills.labels("scheduled").inc(fired.killed_count)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.resolved_database_url, schema=settings.database_schema)

        def on_batch(size: int) -> None:
            metrics.write_batch.observe(size)
            write_health.wrote(size)

        db.writer.on_batch = on_batch
        try:
            await db.upgrade()
        except BaseException:
            await db.close()  # a refused start must not leak its pooled connections
            raise
        store = Store(db, stale_after_s=settings.stale_after_s, clock=clock)
        app.state.store = store
        app.state.agent_store = agent_store = AgentStore(store)
        app.state.notice_store = notice_store = NoticeStore(store)
        app.state.kill_runner = kill_runner = PendingKillRunner(notice_store, hub, on_fired=count_fired)
        app.state.drain_store = DrainStore(store)
        app.state.policy_cache = PolicyCache(PolicyStore(store))
        app.state.config_store = config_store = ConfigStore(store, schema=settings.database_schema)
        app.state.stall_store = StallStore(
            store,
            max_per_agent=settings.max_stalls_per_agent,
            max_total=settings.max_stalls_total,
            max_per_minute=settings.max_stalls_per_minute,
        )
        logger.info("session monitor %s using %s", __version__, db.describe())
        allowed = settings.host_allowlist
        logger.info(
            "answering Host names: %s",
            "any (SESSION_MONITOR_ALLOWED_HOSTS has *)"
            if allowed is None
            else ", ".join(sorted(allowed)) + ", IP literals",
        )
        stop = asyncio.Event()
        kill_task = asyncio.create_task(kill_runner.run(stop), name="session-monitor-pending-kills")
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
                    config_store=config_store,
                    config_retention=(settings.config_history_retention_s, settings.config_history_versions),
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
        # Every replica watches the long-polls it holds itself, whichever of them reaps.
        loss_task = asyncio.create_task(
            run_loss_watch(
                loss_watch,
                store,
                interval_s=defaults.LOST_CHECK_INTERVAL_S,
                stop=stop,
                on_lost=lambda agent: metrics.sessions_ended.labels("process_lost").inc(agent.sessions_ended),
            ),
            name="session-monitor-loss-watch",
        )
        try:
            yield
        finally:
            hub.close()
            stop.set()
            await loss_task
            await kill_task
            if reaper is not None:
                await reaper
            if coordinator is not None:
                await coordinator.close()
            await db.close()

    app = FastAPI(
        title="panel-session-monitor",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        responses=error_responses(*COMMON_ERRORS),
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.hub = hub = CommandHub()
    # No decision in the first sync interval: agents cut off by a restart get the time to come back.
    app.state.loss_watch = loss_watch = LossWatch(
        lost_after_s=settings.process_lost_after_s, warmup_s=settings.sync_interval_s
    )
    app.state.write_health = write_health = WriteHealth()
    install_error_handlers(app, write_health)
    declare_access(app)
    app.include_router(sessions.router)  # first: DELETE /sessions/stale before DELETE /sessions/{session_id}
    app.include_router(session_client.router)
    app.include_router(agents.router)
    app.include_router(admin.router)
    app.include_router(drain.router)
    app.include_router(health.router)
    app.include_router(stats.router)
    app.include_router(stalls.router)
    app.include_router(notices.router)
    app.include_router(policies.router)
    app.include_router(config.router)
    app.add_middleware(
        GuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_sync_body_bytes=settings.max_sync_body_bytes,
        trusted_origins=frozenset(settings.trusted_origins),
        host_allowlist=settings.host_allowlist,
    )
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app
