"""The loop probe, the busy share and the stall watchdog, on a real asyncio loop in a real thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from session_monitor.client import dispatch
from session_monitor.client import loop as work
from session_monitor.client.loop_monitor import LoopMonitor, stall_threshold_s
from session_monitor.client.loop_probe import buckets_of, percentile, pool_stats
from session_monitor.client.stalls import is_app_file, stack_of
from session_monitor.errors import ConfigError
from session_monitor.protocol import LOOP_LAG_BUCKETS_S, LoopHealth, Stall
from tests.helpers import wait_until


class LoopThread:
    """An asyncio loop running in a thread of its own, as Panel's IOLoop runs in its main thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def run(self, fn: Callable[[], Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(_call(fn), self.loop).result(timeout=10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _call(fn: Callable[[], Any]) -> Any:
    return fn()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


@pytest.fixture
def monitor(loop_thread: LoopThread) -> Iterator[LoopMonitor]:
    made = LoopMonitor(loop_thread.loop, stall_s=0.3)
    loop_thread.run(made.start)
    yield made
    made.stop()


def blocking_callback(seconds: float) -> None:
    """The app's own code that blocks the loop (this file is not in site-packages: an app frame)."""
    time.sleep(seconds)


def test_percentiles_and_buckets() -> None:
    ordered = sorted([0.001 * i for i in range(1, 101)])
    assert percentile(ordered, 50) == pytest.approx(0.050)
    assert percentile(ordered, 99) == pytest.approx(0.099)
    assert percentile([0.2], 99) == 0.2
    counts = buckets_of([0.0, 0.001, 0.002, 0.3, 100.0])
    assert len(counts) == len(LOOP_LAG_BUCKETS_S) + 1
    assert counts[0] == 2 and counts[1] == 1 and counts[LOOP_LAG_BUCKETS_S.index(0.5)] == 1 and counts[-1] == 1


def test_healthy_loop_reports_small_lag_low_busy_and_no_stall(monitor: LoopMonitor) -> None:
    monitor.health()
    time.sleep(1.2)
    health = LoopHealth.model_validate(monitor.health())
    assert 8 <= health.probes <= 13
    assert health.lag_p99_ms is not None and health.lag_p99_ms < 100
    assert health.busy is not None and health.busy < 0.3
    assert sum(health.lag_buckets or []) == health.probes
    assert monitor.watchdog.detected == 0
    assert not monitor.watchdog.pending


def test_busy_share_counts_blocking_time(monitor: LoopMonitor, loop_thread: LoopThread) -> None:
    monitor.health()
    loop_thread.call(blocking_callback, 0.2)  # under the stall threshold: busy, not a stall
    time.sleep(0.5)
    health = monitor.health()
    assert 0.25 <= health["busy"] <= 0.8  # type: ignore[operator]
    assert health["lag_max_ms"] >= 100  # type: ignore[operator]
    assert monitor.watchdog.detected == 0


def test_stall_is_caught_while_blocked_with_the_app_frame_and_session(
    monitor: LoopMonitor, loop_thread: LoopThread
) -> None:
    def session_work() -> None:  # as the dispatch wrappers run a session's document callback
        dispatch._run("session-abc", blocking_callback, blocking_callback, 1.2)

    loop_thread.call(session_work)
    # Caught while the loop is still blocked: open, with the stack of the blocking call.
    stalled = wait_until(lambda: monitor.watchdog.take().stalls, timeout_s=1.0)
    first = Stall.model_validate(stalled[0])
    assert not first.final
    assert first.session_id == "session-abc"
    assert first.function is not None and first.function.endswith("blocking_callback")
    top = first.stack[0]
    assert top.app and top.function == "blocking_callback" and top.file.endswith("test_loop_monitor.py")
    assert top.code == "time.sleep(seconds)"
    assert all(f.app for f in first.stack[:2]) and not first.stack[-1].app
    assert len(first.stack) <= 30
    # Once the loop is back, the duration is final (the callback's own start to the probe running again).
    final = wait_until(lambda: [s for s in monitor.watchdog.take().stalls if s["final"]], timeout_s=3.0)
    assert 1.1 <= final[0]["duration_s"] <= 1.6
    assert monitor.watchdog.detected == 1  # once per stall
    batch = monitor.watchdog.take()
    monitor.watchdog.sent(batch)
    assert not monitor.watchdog.pending


def test_each_stall_once_and_open_ones_resent(monitor: LoopMonitor, loop_thread: LoopThread) -> None:
    loop_thread.call(blocking_callback, 0.8)
    wait_until(lambda: monitor.watchdog.detected == 1, timeout_s=1.0)
    batch = monitor.watchdog.take()
    monitor.watchdog.sent(batch)
    assert not monitor.watchdog.pending  # no sync is due for it alone ...
    assert monitor.watchdog.take().stalls[0]["seq"] == 1  # ... but each sync carries it while open
    wait_until(lambda: monitor.watchdog.take().stalls[0]["final"], timeout_s=2.0)
    loop_thread.call(blocking_callback, 0.6)
    wait_until(lambda: monitor.watchdog.detected == 2, timeout_s=1.5)
    time.sleep(0.8)
    assert monitor.watchdog.detected == 2
    seqs = [s["seq"] for s in monitor.watchdog.take().stalls]
    assert seqs == [1, 2]


def test_queue_is_bounded_and_counts_drops(loop_thread: LoopThread) -> None:
    made = LoopMonitor(loop_thread.loop, stall_s=0.15)
    made.watchdog.max_queued = 2
    loop_thread.run(made.start)
    try:
        for _ in range(4):
            loop_thread.call(blocking_callback, 0.3)
            time.sleep(0.5)
        wait_until(lambda: made.watchdog.detected == 4, timeout_s=2)
        assert [s["seq"] for s in made.watchdog.take().stalls] == [3, 4]
        assert made.health()["stalls_dropped"] == 2
    finally:
        made.stop()


def test_watchdog_sleeps_while_the_loop_is_healthy(monitor: LoopMonitor) -> None:
    before = monitor.watchdog.wakeups
    time.sleep(2.0)
    woke = monitor.watchdog.wakeups - before
    # It sleeps until each deadline (due + stall_s): a few wake-ups per second, never a busy poll.
    assert 1 <= woke <= 2.0 / 0.3 + 2


def test_stopped_loop_is_not_a_stall(loop_thread: LoopThread) -> None:
    made = LoopMonitor(loop_thread.loop, stall_s=0.2)
    loop_thread.run(made.start)
    loop_thread.loop.call_soon_threadsafe(loop_thread.loop.stop)
    loop_thread.thread.join(5)
    time.sleep(0.6)
    assert made.watchdog.detected == 0
    made.stop()
    loop_thread.thread = threading.Thread(target=loop_thread.loop.run_forever, daemon=True)
    loop_thread.thread.start()


def test_coroutine_steps_are_marked_for_their_session(loop_thread: LoopThread) -> None:
    seen: list[work.Work | None] = []

    async def callback() -> None:
        seen.append(work.running())
        await asyncio.sleep(0.01)
        seen.append(work.running())

    async def main() -> None:
        await dispatch._run("s1", callback, callback)  # the dispatch wrappers time and mark it step by step
        seen.append(work.running())

    asyncio.run_coroutine_threadsafe(main(), loop_thread.loop).result(5)
    assert [w.session_id if w else None for w in seen] == ["s1", "s1", None]
    assert seen[0] is not None and seen[0].function.endswith("callback")


def test_stack_is_bounded_and_text_is_clean() -> None:
    def deep(n: int) -> Any:
        if n == 0:
            import sys

            return stack_of(sys._getframe())
        return deep(n - 1)

    stack = deep(60)
    assert len(stack) == 30
    assert all(f["app"] for f in stack) and stack[0]["function"].endswith("deep")
    assert not is_app_file(threading.__file__) and not is_app_file(pytest.__file__) and not is_app_file("<string>")
    assert is_app_file(__file__)


def test_pool_stats_of_a_thread_pool() -> None:
    assert pool_stats(None) is None
    gate = threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(gate.wait, 5) for _ in range(5)]
        stats = pool_stats(pool)
        assert stats == {"pool_size": 2, "pool_queue": 3, "pool_busy": 2}
        gate.set()
        for f in futures:
            f.result(5)
        wait_until(lambda: pool_stats(pool) == {"pool_size": 2, "pool_queue": 0, "pool_busy": 0}, timeout_s=2)


def test_stall_threshold_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert stall_threshold_s() == 0.5
    monkeypatch.setenv("SESSION_MONITOR_STALL_S", "2")
    assert stall_threshold_s() == 2.0
    monkeypatch.setenv("SESSION_MONITOR_STALL_S", "0")
    with pytest.raises(ConfigError, match="SESSION_MONITOR_STALL_S"):
        stall_threshold_s()
