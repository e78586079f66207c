"""Prometheus metrics, on a registry of the app's own (several apps can live in one process, as in tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from session_monitor.server.loop_metrics import LoopMetrics

# `_created` samples double every series and no dashboard uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.sessions = Gauge(
            "session_monitor_sessions", "Live sessions by app and state.", ["app", "state"], registry=r
        )
        self.sessions_registered = Counter("session_monitor_sessions_registered", "Sessions registered.", registry=r)
        self.sessions_ended = Counter(
            "session_monitor_sessions_ended", "Sessions ended, by reason.", ["reason"], registry=r
        )
        self.kills = Counter(
            "session_monitor_kill_requests",
            "Kill requests, by scope (session, app; scheduled: sessions killed at a notice's deadline).",
            ["scope"],
            registry=r,
        )
        self.heartbeats = Counter("session_monitor_heartbeats", "Heartbeats received.", registry=r)
        self.reaper_passes = Counter(
            "session_monitor_reaper_passes", "Reaper passes run by this server process.", registry=r
        )
        self.reaper_leader = Gauge(
            "session_monitor_reaper_leader",
            "1 while this process runs the reaper (replicas on PostgreSQL: holds its advisory lock).",
            registry=r,
        )
        self.replica_wakeups = Counter(
            "session_monitor_replica_wakeups",
            "Agents whose long-polls were woken by another replica's kill (PostgreSQL NOTIFY).",
            registry=r,
        )
        self.write_batch = Histogram(
            "session_monitor_db_write_batch_size",
            "Writes committed per transaction.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )
        self.leftovers = Gauge(
            "session_monitor_leftovers",
            "Threads, periodic callbacks and pool jobs still running for ended sessions, as live processes report.",
            ["kind"],
            registry=r,
        )
        self.request_latency = Histogram(
            "session_monitor_http_request_duration_seconds",
            "HTTP request latency by route and status.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

        self.loop = LoopMetrics(r)

    def set_leftovers(self, counts: dict[str, int]) -> None:
        self.leftovers.clear()
        for kind in ("thread", "periodic_callback", "pool_job"):
            self.leftovers.labels(kind).set(counts.get(kind, 0))

    def set_live_counts(self, counts: list[tuple[str, str, int]]) -> None:
        self.sessions.clear()
        for app, state, count in counts:
            self.sessions.labels(app, state).set(count)


@dataclass
class LatencyMiddleware:
    """Times every request; labels use the route template, never the raw path (bounded cardinality)."""

    app: ASGIApp
    metrics: Metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # ``:anypath`` (a path segment that may hold a line break) keeps the label it had as ``:path``.
            template = (getattr(route, "path", None) or "unmatched").replace(":anypath}", ":path}")
            self.metrics.request_latency.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start
            )
