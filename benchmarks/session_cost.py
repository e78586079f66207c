"""Per-session cost accounting: what it adds to each callback, and to a loop-bound Panel app's throughput.

(a) Per callback: the accounting wrapper every dispatched callback goes through (``dispatch._run``: two
    ``perf_counter_ns``, the meter, the 1-minute bucket, the current-work slot), around a no-op callback,
    beside the bare call of the same callback. CPU time of the thread (``thread_time_ns``), median over
    batches of 20,000 calls; the overhead is the difference of the medians.
(b) Throughput: a loop-bound Panel app on a real Bokeh ``ServerSession`` and Tornado IOLoop in this process:
    each next-tick callback moves an ``IntSlider`` (param watchers, a Bokeh model change, the document's
    patch bookkeeping under its lock) and schedules the next, as fast as the loop runs them; callbacks/s over
    ``--seconds``, with tracking off (Bokeh's and param's own methods) and on (:func:`dispatch.install`),
    in alternating rounds (ABBA) of one run after a warm-up; the median of each.

Targets (issue 13): < 2 µs per callback, < 1 % of the throughput. Figures only, no assertions.
Run: ``.venv/bin/python benchmarks/session_cost.py [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCH = 20_000


def _noop() -> None:
    return None


def per_callback(batches: int) -> dict[str, float]:
    """Median ns per call: bare, and through the accounting wrapper."""
    from session_monitor.client import cost, dispatch

    bare: list[float] = []
    tracked: list[float] = []
    run = dispatch._run
    fn = _noop
    clock = time.thread_time_ns  # CPU time of this thread: another process's load on the shared machine is not ours
    for _ in range(batches):
        start = clock()
        for _ in range(BATCH):
            fn()
        bare.append((clock() - start) / BATCH)
        start = clock()
        for _ in range(BATCH):
            run("bench-session", fn, fn)
        tracked.append((clock() - start) / BATCH)
    cost.reset()
    bare_ns, tracked_ns = statistics.median(bare), statistics.median(tracked)
    return {"bare_us": bare_ns / 1000, "tracked_us": tracked_ns / 1000, "overhead_us": (tracked_ns - bare_ns) / 1000}


async def _throughput(seconds: float) -> float:
    """Callbacks per CPU second of the loop-bound app on a fresh session (see the module docstring).

    Per CPU second of the loop's thread rather than per wall second: the machine is shared, and another
    process's load changes wall-clock throughput by tens of percent between rounds.
    """
    import panel as pn
    from bokeh.document import Document
    from bokeh.server.session import ServerSession
    from panel.io.state import set_curdoc
    from tornado.ioloop import IOLoop

    doc = Document()
    slider = pn.widgets.IntSlider(start=0, end=10**9)
    label = pn.pane.Str("0")
    slider.param.watch(lambda event: setattr(label, "object", str(event.new)), "value")
    with set_curdoc(doc):
        doc.add_root(pn.Column(slider, label).get_root(doc))
    ServerSession("bench", doc, IOLoop.current())
    done = asyncio.get_running_loop().create_future()
    count = 0
    deadline = time.perf_counter() + seconds

    def step() -> None:
        nonlocal count
        slider.value += 1
        count += 1
        if time.perf_counter() < deadline:
            doc.add_next_tick_callback(step)
        elif not done.done():
            done.set_result(None)

    cpu_start = time.thread_time()
    doc.add_next_tick_callback(step)
    await done
    rate = count / (time.thread_time() - cpu_start)
    for cb in doc.session_callbacks:
        doc.remove_next_tick_callback(cb)  # type: ignore[arg-type]
    return rate


def throughput(rounds: int, seconds: float) -> dict[str, Any]:
    from session_monitor.client import cost, dispatch

    off: list[float] = []
    on: list[float] = []
    asyncio.run(_throughput(min(seconds, 1.0)))  # warm-up: imports, first renders
    for i in range(rounds):
        for tracked in (False, True) if i % 2 == 0 else (True, False):  # ABBA: drift hits both alike
            if tracked:
                dispatch.install()
                on.append(asyncio.run(_throughput(seconds)))
                cost.reset()
            else:
                dispatch.uninstall()
                off.append(asyncio.run(_throughput(seconds)))
    off_rate, on_rate = statistics.median(off), statistics.median(on)
    return {
        "untracked_per_s": off_rate,
        "tracked_per_s": on_rate,
        "slowdown_percent": (1 - on_rate / off_rate) * 100,
        "rounds_untracked": off,
        "rounds_tracked": on,
    }


def _spread(values: list[float]) -> float:
    """Half the range of ``values`` as a percentage of their median."""
    return (max(values) - min(values)) / 2 / statistics.median(values) * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer batches and shorter rounds")
    parser.add_argument("--seconds", type=float, default=None, help="length of each throughput round")
    parser.add_argument("--rounds", type=int, default=None, help="throughput rounds of each kind (default 7)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    calls = per_callback(10 if args.quick else 50)
    rate = throughput(args.rounds or (3 if args.quick else 7), seconds)
    if args.json:
        sys.stdout.write(json.dumps({"per_callback": calls, "throughput": rate}, indent=2) + "\n")
        return
    lines = [
        "Per-session cost accounting (issue 13 targets: < 2 µs per callback, < 1 % of throughput)",
        f"  per callback: bare {calls['bare_us']:.3f} µs, accounted {calls['tracked_us']:.3f} µs "
        f"-> overhead {calls['overhead_us']:.3f} µs (median of batches of {BATCH:,})",
        f"  loop-bound Panel app: {rate['untracked_per_s']:,.0f} callbacks per CPU second untracked, "
        f"{rate['tracked_per_s']:,.0f} tracked -> {rate['slowdown_percent']:+.2f} % "
        f"(medians of {len(rate['rounds_tracked'])} alternating rounds of {seconds:g} s; ratio "
        f"{rate['tracked_per_s'] / rate['untracked_per_s']:.4f})",
        "  rounds untracked: " + ", ".join(f"{x:,.0f}" for x in rate["rounds_untracked"]),
        "  rounds tracked:   " + ", ".join(f"{x:,.0f}" for x in rate["rounds_tracked"]),
        f"  spread of the untracked rounds: ±{_spread(rate['rounds_untracked']):.1f} % (what one figure can resolve)",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
