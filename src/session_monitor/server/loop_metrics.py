"""Prometheus series of the Panel processes' loops: one lag histogram per process, stalls, busy share, pool.

- ``session_monitor_loop_lag_seconds{host,pid}``: a histogram of probe lags. Each sync brings the bucket counts
  of its interval (``LoopHealth.lag_buckets``); this replica adds them up for the syncs it received. With
  replicas, each counts distinct syncs, so ``sum by (host, pid)`` over replicas is the process's histogram and
  ``histogram_quantile`` works over any window. Labelled by process, never by session: bounded cardinality.
  A process that sent nothing for :data:`FORGET_AFTER_S` is dropped from the output.
- ``session_monitor_loop_stalls_total{host,pid}``: stalls first stored by this replica.
- ``session_monitor_loop_stalls_dropped_total``: stalls refused (rate) or dropped (caps) by this replica.
- ``session_monitor_loop_busy_ratio{host,pid}``, ``session_monitor_pool_queue_depth{host,pid}``,
  ``session_monitor_pool_busy_threads{host,pid}``: the latest interval of each live agent, read from the
  database at scrape time (so every replica shows every agent).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from session_monitor.protocol import LOOP_LAG_BUCKETS_S, LoopHealth

FORGET_AFTER_S = 3600.0
"""A process's lag histogram is no longer exported after this long without a sync."""


@dataclass
class _Histogram:
    buckets: list[int]
    sum_s: float = 0.0
    seen: float = field(default_factory=time.monotonic)


class LagHistograms(Collector):
    """The per-process lag histograms, accumulated from the syncs' bucket counts."""

    def __init__(self) -> None:
        self._by_process: dict[tuple[str, str], _Histogram] = {}
        self._lock = threading.Lock()

    def add(self, host: str, pid: int, loop: LoopHealth) -> None:
        if not loop.lag_buckets:
            return
        with self._lock:
            now = time.monotonic()
            entry = self._by_process.setdefault((host, str(pid)), _Histogram([0] * len(loop.lag_buckets)))
            entry.buckets = [a + b for a, b in zip(entry.buckets, loop.lag_buckets, strict=True)]
            entry.sum_s += loop.lag_sum_ms / 1000
            entry.seen = now
            for key in [k for k, v in self._by_process.items() if now - v.seen > FORGET_AFTER_S]:
                del self._by_process[key]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "session_monitor_loop_lag_seconds",
            "How late the IOLoop ran a probe scheduled every 100 ms, per Panel process.",
            labels=["host", "pid"],
        )
        with self._lock:
            items = [(k, list(v.buckets), v.sum_s) for k, v in self._by_process.items()]
        for (host, pid), counts, sum_s in items:
            cumulative, running = [], 0
            for bound, n in zip((*map(str, LOOP_LAG_BUCKETS_S), "+Inf"), counts, strict=True):
                running += n
                cumulative.append((bound, float(running)))
            family.add_metric([host, pid], cumulative, sum_s)
        yield family


class LoopMetrics:
    """The loop series, registered on the app's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = LagHistograms()
        registry.register(self.lag)
        self.stalls = Counter(
            "session_monitor_loop_stalls", "Stalls of a Panel process's IOLoop.", ["host", "pid"], registry=registry
        )
        self.stalls_dropped = Counter(
            "session_monitor_loop_stalls_dropped",
            "Stalls refused (over an agent's rate) or dropped (over the caps, oldest first).",
            registry=registry,
        )
        self.busy = Gauge(
            "session_monitor_loop_busy_ratio",
            "Share of wall time the IOLoop ran callbacks, latest sync interval.",
            ["host", "pid"],
            registry=registry,
        )
        self.pool_queue = Gauge(
            "session_monitor_pool_queue_depth",
            "Jobs waiting in Panel's thread pool.",
            ["host", "pid"],
            registry=registry,
        )
        self.pool_busy = Gauge(
            "session_monitor_pool_busy_threads",
            "Threads of Panel's pool running a job.",
            ["host", "pid"],
            registry=registry,
        )

    def set_live(self, agents: Iterable[dict[str, Any]]) -> None:
        """The gauges from ``GET /agents``-shaped rows of live agents (at scrape time)."""
        for gauge in (self.busy, self.pool_queue, self.pool_busy):
            gauge.clear()
        for agent in agents:
            loop = agent.get("loop")
            if not loop or agent.get("is_stale"):
                continue
            labels = (str(agent["host"]), str(agent["pid"]))
            if loop.get("busy") is not None:
                self.busy.labels(*labels).set(loop["busy"])
            if loop.get("pool_queue") is not None:
                self.pool_queue.labels(*labels).set(loop["pool_queue"])
            if loop.get("pool_busy") is not None:
                self.pool_busy.labels(*labels).set(loop["pool_busy"])
