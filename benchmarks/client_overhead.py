"""Client overhead: what tracking costs the Panel app's own threads, and what it holds per process.

(a) ``with tracker.task("x"): pass``, timed per call with ``time.perf_counter_ns`` over at least
    100,000 calls (and at least a few seconds, so the agent syncs several times meanwhile), beside an
    empty context manager (a trivial class with ``__enter__``/``__exit__``) and
    ``contextlib.nullcontext()``. Three runs, each in a fresh process (the agent is one per process):
    the monitor server up; DOWN (a free port, nothing listening); HUNG (a socket that accepts
    connections and never answers, so every request of the agent waits for its timeout). The seed
    made two blocking HTTP round trips per ``task()`` (up to 10 s each while the server hangs).
(b) Threads, open inet sockets and RSS of one process holding 1, 100 and 1,000 trackers (each size
    in a fresh child process, measured once the server lists all of them), beside a model of the
    seed's architecture at the same sizes: one daemon heartbeat thread and one ``httpx.Client`` per
    session (:class:`SeedStyleSession`, a model written here, not the prototype's code). ``ΔRSS`` is
    against the same kind of process holding none.

Figures only, no assertions. Run: ``.venv/bin/python benchmarks/client_overhead.py [--quick]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ITERATIONS = 100_000
MIN_SECONDS = 3.0
"""Each case runs at least this long, so the agent thread syncs (or hangs) several times meanwhile."""
SIZES = (1, 100, 1_000)
SEED_HEARTBEAT_S = 30.0
"""The prototype's heartbeat period; long enough that the model's threads all sleep while measured."""


# -- (a) per-call cost, in a child process ------------------------------------------------------------------------


class EmptyContext:
    """The cheapest context manager a class can be."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _percentiles(samples: list[int]) -> dict[str, float]:
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "calls": n,
        "median_us": statistics.median(ordered) / 1000,
        "p95_us": ordered[int(n * 0.95)] / 1000,
        "p99_us": ordered[int(n * 0.99)] / 1000,
        "max_us": ordered[-1] / 1000,
        "over_1ms": sum(1 for v in ordered[int(n * 0.99) :] if v > 1_000_000),
    }


def _time_task(tracker: Any, min_calls: int, min_s: float) -> list[int]:
    clock, samples, until = time.perf_counter_ns, [], time.monotonic() + min_s
    while len(samples) < min_calls or time.monotonic() < until:
        for _ in range(10_000):
            t0 = clock()
            with tracker.task("x"):
                pass
            samples.append(clock() - t0)
    return samples


def _time_empty(min_calls: int, min_s: float) -> list[int]:
    clock, samples, until = time.perf_counter_ns, [], time.monotonic() + min_s
    while len(samples) < min_calls or time.monotonic() < until:
        for _ in range(10_000):
            t0 = clock()
            with EmptyContext():
                pass
            samples.append(clock() - t0)
    return samples


def _time_null(min_calls: int, min_s: float) -> list[int]:
    clock, samples, until = time.perf_counter_ns, [], time.monotonic() + min_s
    while len(samples) < min_calls or time.monotonic() < until:
        for _ in range(10_000):
            t0 = clock()
            with contextlib.nullcontext():
                pass
            samples.append(clock() - t0)
    return samples


def _time_floor(min_calls: int) -> list[int]:
    clock, samples = time.perf_counter_ns, []
    for _ in range(min_calls):
        t0 = clock()
        samples.append(clock() - t0)
    return samples


def child_task_cost(url: str, min_calls: int, min_s: float) -> dict[str, Any]:
    os.environ["SESSION_MONITOR_URL"] = url
    from session_monitor import SessionClient, get_agent

    tracker = SessionClient.get_tracker("bench-overhead")  # starts the agent thread: it syncs meanwhile
    agent = get_agent()
    started = time.monotonic()
    # Steady state: the agent thread's start-up (building its HTTP client loads the CA bundle, in C, holding
    # the GIL for some 30-40 ms) stalls other threads once per process; it is not what is measured here.
    while agent._client is None and time.monotonic() - started < 10:
        time.sleep(0.01)
    result = {
        "timer floor": _percentiles(_time_floor(min_calls)),
        'with tracker.task("x")': _percentiles(_time_task(tracker, min_calls, min_s)),
        "with EmptyContext()": _percentiles(_time_empty(min_calls, min_s)),
        "with nullcontext()": _percentiles(_time_null(min_calls, min_s)),
    }
    result["agent"] = {"syncs": agent.syncs, "online": agent.online, "seconds": time.monotonic() - started}
    return result


# -- (b) what one process holds -------------------------------------------------------------------------------------


class SeedStyleSession:
    """A model of the seed's per-session architecture (not its code), for comparison.

    Each session owns an ``httpx.Client`` (its own connection pool, so its own socket) and a daemon
    thread that heartbeats, sleeping on an ``Event`` in between; registering is one POST.
    """

    def __init__(self, url: str, app_name: str, user_id: str) -> None:
        import httpx

        self.client = httpx.Client(base_url=url, timeout=10.0)
        body = {"app_name": app_name, "user_id": user_id}
        self.session_id = self.client.post("/sessions", json=body).raise_for_status().json()["session_id"]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)
        self.thread.start()

    def _beat(self) -> None:
        while not self.stopped.wait(SEED_HEARTBEAT_S):
            self.client.post(f"/sessions/{self.session_id}/heartbeat")

    def stop(self) -> None:
        self.stopped.set()
        self.client.close()


def _listed(url: str, user_id: str) -> int:
    import httpx

    response = httpx.get(f"{url}/sessions", params={"user": user_id, "limit": 1}, timeout=10.0)
    return int(response.json()["total"])


def child_hold(style: str, count: int, url: str) -> dict[str, Any]:
    import httpx  # noqa: F401  (both models pay for it)
    import psutil

    if style == "agent":
        os.environ["SESSION_MONITOR_URL"] = url
        from session_monitor import SessionClient
    tag = f"hold-{uuid.uuid4().hex[:10]}"
    held: list[Any] = []
    started = time.monotonic()
    for i in range(count):
        if style == "agent":
            held.append(SessionClient.get_tracker(f"{tag}-{i}", user_id=tag))
        else:
            held.append(SeedStyleSession(url, f"{tag}-{i}", tag))
    deadline = time.monotonic() + 120
    while count and _listed(url, tag) < count:  # the server knows every one of them
        if time.monotonic() > deadline:
            raise RuntimeError(f"server lists {_listed(url, tag)} of {count} sessions")
        time.sleep(0.05)
    registered_s = time.monotonic() - started
    process = psutil.Process()
    getter = getattr(process, "net_connections", None) or process.connections
    figures = {
        "threads": threading.active_count(),
        "sockets": len(getter(kind="inet")),
        "rss_mb": process.memory_info().rss / 2**20,
        "registered_s": registered_s,
    }
    if style == "seed":
        for session in held:
            session.stop()
    return figures  # the agent's own exit hook ends its sessions


# -- servers ------------------------------------------------------------------------------------------------------


class HungServer:
    """Accepts TCP connections on a loopback port and never reads or answers them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def run_child(*args: str, timeout_s: float = 300) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def print_task_costs(mode: str, result: dict[str, Any]) -> None:
    agent = result.pop("agent")
    print(f"\nserver {mode}: agent made {agent['syncs']} successful syncs during the run, online={agent['online']}")
    print(f"  {'':26}{'calls':>10}{'median µs':>11}{'p95 µs':>9}{'p99 µs':>9}{'max µs':>10}{'> 1 ms':>8}")
    for name, f in result.items():
        print(
            f"  {name:26}{f['calls']:>10,}{f['median_us']:>11.2f}{f['p95_us']:>9.2f}{f['p99_us']:>9.2f}"
            f"{f['max_us']:>10.1f}{f['over_1ms']:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Shorter runs (1 s per case) and sizes up to 100.")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "task":
            result = child_task_cost(rest[0], int(rest[1]), float(rest[2]))
        else:
            result = child_hold(rest[0], int(rest[1]), rest[2])
        print(json.dumps(result))
        return

    from tests.helpers import ServerProcess, free_port

    min_s = 1.0 if args.quick else MIN_SECONDS
    sizes = SIZES[:2] if args.quick else SIZES
    print(__doc__.split("\n\n")[0])
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(
            {"SESSION_MONITOR_DATABASE_URL": f"sqlite:///{Path(tmp) / 'bench.sqlite3'}"},
            log_path=Path(tmp) / "server.log",
        ).start()
        hung = HungServer()
        try:
            print("\n(a) cost of one call on the caller's thread (perf_counter_ns per call; GC on)")
            print("    seed: 2 blocking HTTP round trips per task(), ≤ 10 s each if the server hangs")
            print("    target: median < 20 µs, never waits on the network")
            for mode, url in (
                ("UP", server.url),
                ("DOWN (nothing listening)", f"http://127.0.0.1:{free_port()}"),
                ("HUNG (accepts, never answers)", hung.url),
            ):
                print_task_costs(mode, run_child("task", url, str(ITERATIONS), str(min_s)))
            print(f"\n    the hung server accepted {len(hung.accepted)} connections from the agent and answered none")

            print("\n(b) one process holding N tracked sessions (fresh child process per row; server up)")
            print(f"  {'model':34}{'N':>6}{'threads':>9}{'sockets':>9}{'RSS MB':>9}{'ΔRSS MB':>9}{'reg. s':>8}")
            for style, label in (
                ("agent", "ours: one agent per process"),
                ("seed", "seed-style: thread+client/session"),
            ):
                base = run_child("hold", style, "0", server.url)
                for n in (0, *sizes):
                    f = base if n == 0 else run_child("hold", style, str(n), server.url)
                    print(
                        f"  {label:34}{n:>6,}{f['threads']:>9}{f['sockets']:>9}{f['rss_mb']:>9.1f}"
                        f"{f['rss_mb'] - base['rss_mb']:>9.1f}{f['registered_s']:>8.2f}"
                    )
        finally:
            hung.close()
            server.stop()


if __name__ == "__main__":
    main()
