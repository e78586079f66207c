"""Loop health overhead: what the probe, the busy-share timer and the stall watchdog cost a Panel process.

(a) **Watchdog CPU while healthy**: an asyncio loop in a thread with the loop monitor on it (probe every
    100 ms, watchdog at the default 0.5 s), idle for ``--seconds`` (60): the watchdog thread's CPU time
    (``psutil`` per-thread user + system time) and its wake-ups per second, beside the loop thread's.
(b) **Throughput of a loop-bound app**, with and without the monitor, in the same run: a socketpair
    ping-pong on one asyncio loop (each message is one read callback and one pass through ``select()``,
    the path the busy-share timer wraps), plus 20 µs of Python work per message, as a loop-bound Panel
    app spends its time. Rounds alternate without/with (``--rounds`` × ``--round-s``); the median of each.
Marking a callback as a session's work (``client/loop.py``'s slot) is done by the cost accounting's
dispatch wrappers; ``benchmarks/session_cost.py`` measures their whole per-callback cost.

Figures only, no assertions. Run: ``.venv/bin/python benchmarks/loop_health.py [--seconds 60] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from session_monitor.client.loop_monitor import LoopMonitor  # noqa: E402

WORK_S = 20e-6
"""Python work per message of the loop-bound app."""


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _thread_cpu_s(native_id: int | None) -> float:
    for t in psutil.Process().threads():
        if t.id == native_id:
            return float(t.user_time + t.system_time)
    return float("nan")


def watchdog_cpu(seconds: float) -> dict[str, float]:
    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    monitor = LoopMonitor(loop)
    started = threading.Event()
    loop.call_soon_threadsafe(lambda: (monitor.start(), started.set()))
    started.wait(5)
    watchdog_id = monitor.watchdog._thread.native_id
    time.sleep(1.0)
    cpu0, loop_cpu0, wake0, t0 = (
        _thread_cpu_s(watchdog_id),
        _thread_cpu_s(loop_thread.native_id),
        monitor.watchdog.wakeups,
        time.monotonic(),
    )
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    cpu = _thread_cpu_s(watchdog_id) - cpu0
    loop_cpu = _thread_cpu_s(loop_thread.native_id) - loop_cpu0
    wakeups = monitor.watchdog.wakeups - wake0
    health = monitor.health()
    monitor.stop()
    loop.call_soon_threadsafe(loop.stop)
    loop_thread.join(5)
    loop.close()
    return {
        "seconds": elapsed,
        "watchdog_cpu_s": cpu,
        "watchdog_cpu_pct": 100 * cpu / elapsed,
        "wakeups_per_s": wakeups / elapsed,
        "loop_cpu_pct": 100 * loop_cpu / elapsed,
        "stalls": float(monitor.watchdog.detected),
        "probes": float(health["probes"]),  # type: ignore[arg-type]
    }


async def _pingpong(seconds: float) -> int:
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    count = 0
    done = loop.create_future()
    deadline = time.perf_counter() + seconds

    def on_a() -> None:
        nonlocal count
        try:
            a.recv(64)
        except BlockingIOError:
            return
        count += 1
        _spin(WORK_S)
        if time.perf_counter() >= deadline:
            if not done.done():
                done.set_result(None)
            return
        b.send(b"x")

    def on_b() -> None:
        try:
            b.recv(64)
        except BlockingIOError:
            return
        a.send(b"y")

    loop.add_reader(a.fileno(), on_a)
    loop.add_reader(b.fileno(), on_b)
    b.send(b"x")
    await done
    loop.remove_reader(a.fileno())
    loop.remove_reader(b.fileno())
    a.close()
    b.close()
    return count


def _round(seconds: float, monitored: bool) -> float:
    loop = asyncio.new_event_loop()
    monitor = LoopMonitor(loop) if monitored else None
    try:
        if monitor is not None:
            loop.call_soon(monitor.start)
        messages = loop.run_until_complete(_pingpong(seconds))
    finally:
        if monitor is not None:
            monitor.watchdog.stop()
            monitor.probe.stop()
        loop.close()
    return messages / seconds


def throughput(rounds: int, round_s: float) -> dict[str, float]:
    without: list[float] = []
    with_: list[float] = []
    for i in range(rounds):
        # ABBA order: a machine getting busier or quieter during the run weighs on both sides alike.
        for monitored in (False, True) if i % 2 == 0 else (True, False):
            (with_ if monitored else without).append(_round(round_s, monitored))
    a, b = statistics.median(without), statistics.median(with_)
    spread = 100 * (max(without) - min(without)) / a
    return {"without": a, "with": b, "overhead_pct": 100 * (a - b) / a, "spread_pct": spread}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="healthy window for the watchdog's CPU")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--round-s", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="10 s window, 3 rounds of 1 s")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.round_s = 10.0, 3, 1.0
    lines = []
    w = watchdog_cpu(args.seconds)
    lines.append(f"(a) healthy loop for {w['seconds']:.0f} s, probe every 100 ms, stall threshold 0.5 s")
    lines.append(
        f"    watchdog thread CPU: {w['watchdog_cpu_s'] * 1000:.1f} ms ({w['watchdog_cpu_pct']:.4f} % of one core; "
        "psutil counts in 10 ms ticks), "
        f"{w['wakeups_per_s']:.2f} wake-ups/s; loop thread (probe + timed select) {w['loop_cpu_pct']:.3f} %; "
        f"stalls {w['stalls']:.0f}"
    )
    t = throughput(args.rounds, args.round_s)
    lines.append(f"(b) loop-bound ping-pong, {WORK_S * 1e6:.0f} us of work per message, median of {args.rounds} x "
                 f"{args.round_s:g} s each way")  # fmt: skip
    lines.append(
        f"    without monitor {t['without']:,.0f} msg/s, with {t['with']:,.0f} msg/s: "
        f"overhead {t['overhead_pct']:+.2f} % (rounds without the monitor spread over {t['spread_pct']:.1f} %)"
    )
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
