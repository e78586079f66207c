"""The loop monitor of this process: the probe on the IOLoop Panel serves on, and its stall watchdog.

:func:`install` runs once, on the IOLoop's thread (the Panel integration calls it when the first session's
websocket connects); the agent reads :func:`current` at each sync for the loop health and the stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading

from session_monitor.client.config import env_setting, positive_float
from session_monitor.client.loop_probe import PROBE_INTERVAL_S, LoopProbe, PoolFinder
from session_monitor.client.stalls import STALL_S, StallWatchdog

logger = logging.getLogger(__name__)

__all__ = ["LoopMonitor", "current", "install", "reset", "stall_threshold_s"]


def stall_threshold_s(explicit: float | None = None) -> float:
    """``SESSION_MONITOR_STALL_S`` (default 0.5): how late the probe must be for a stall to be recorded."""
    return env_setting("SESSION_MONITOR_STALL_S", STALL_S, positive_float, explicit)


class LoopMonitor:
    """A :class:`LoopProbe` and its :class:`StallWatchdog` on one asyncio loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        stall_s: float | None = None,
        pool: PoolFinder | None = None,
        interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self.probe = LoopProbe(loop, interval_s=interval_s, pool=pool)
        self.watchdog = StallWatchdog(self.probe, stall_s=stall_threshold_s(stall_s))

    def start(self) -> None:
        """Start both (on the loop's thread)."""
        self.probe.start()
        self.watchdog.start()

    def stop(self) -> None:
        """Stop both; the probe's own timer is cancelled on the loop (thread-safe)."""
        self.watchdog.stop()
        loop = self.probe.loop
        if loop.is_closed():
            return
        if threading.get_ident() == self.probe.thread_id:
            self.probe.stop()
        else:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(self.probe.stop)

    def health(self) -> dict[str, object]:
        """The ``LoopHealth`` of the interval since the last call, with the stalls dropped so far."""
        health = self.probe.snapshot()
        health["stalls_dropped"] = self.watchdog.dropped
        return health


_monitor: LoopMonitor | None = None
_lock = threading.Lock()


def install(loop: asyncio.AbstractEventLoop, *, pool: PoolFinder | None = None) -> LoopMonitor:
    """The process's loop monitor, started on ``loop`` the first time (call on ``loop``'s thread)."""
    global _monitor
    with _lock:
        if _monitor is None:
            _monitor = LoopMonitor(loop, pool=pool)
            _monitor.start()
            logger.info("loop probe started (stall threshold %.2f s)", _monitor.watchdog.stall_s)
        elif _monitor.probe.loop is not loop:
            logger.debug("loop monitor already watches another loop; one per process")
        return _monitor


def current() -> LoopMonitor | None:
    """The process's loop monitor, if :func:`install` ran."""
    return _monitor


def reset() -> None:
    """Stop and forget the process's loop monitor (tests)."""
    global _monitor
    with _lock:
        monitor, _monitor = _monitor, None
    if monitor is not None:
        monitor.stop()
