"""SIGTERM ends every session as ``process_exit``, whichever thread made the process's first tracker.

``signal.signal`` works on the main thread only: when the first tracker was made on a worker thread, the
agent could not install its SIGTERM handler and the process died with every session left listed (20 of 20).
Each test runs a real Python child against a real server and sends it SIGTERM; right after it exited, its
sessions must all be ended by the agent as ``process_exit`` (not left for the server to find lost).
The handler chains: one the program (or Tornado, Panel, uvicorn) installed is called, never replaced.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from session_monitor.server import Settings, create_app
from tests.helpers import serve_in_thread, wait_until

SESSIONS = 20

WORKER_THREAD_FIRST = """
import sys, threading
import session_monitor  # imported on the main thread, as an app's imports are
from session_monitor import ClientConfig, SessionClient, get_agent

url, count = sys.argv[1], int(sys.argv[2])

def make():
    get_agent(ClientConfig(server_url=url, flush_delay_s=0.02, sync_interval_s=60, sync_interval_from_env=True))
    for i in range(count):
        print(SessionClient.get_tracker(f"sigterm-{i}").session_id, flush=True)

worker = threading.Thread(target=make)
worker.start()
worker.join()
threading.Event().wait()  # the main thread blocks, as a server's would
"""

IMPORTED_ON_A_WORKER_UNDER_TORNADO = """
import sys, threading
from tornado.ioloop import IOLoop

url, count = sys.argv[1], int(sys.argv[2])

def make():
    # session_monitor is imported here first: only the main thread's IOLoop can install the handler.
    from session_monitor import ClientConfig, SessionClient, get_agent
    get_agent(ClientConfig(server_url=url, flush_delay_s=0.02, sync_interval_s=60, sync_interval_from_env=True))
    for i in range(count):
        print(SessionClient.get_tracker(f"sigterm-{i}").session_id, flush=True)

loop = IOLoop.current()
loop.add_callback(lambda: threading.Thread(target=make).start())
loop.start()
"""

PROGRAM_HANDLER_FIRST = """
import signal, sys, threading

stop = threading.Event()

def on_term(signum, frame):
    print("program handler ran", flush=True)
    stop.set()

signal.signal(signal.SIGTERM, on_term)  # the program's own graceful stop, before the monitor is imported

import session_monitor
from session_monitor import ClientConfig, SessionClient, get_agent

url, count = sys.argv[1], int(sys.argv[2])

def make():
    get_agent(ClientConfig(server_url=url, flush_delay_s=0.02, sync_interval_s=60, sync_interval_from_env=True))
    for i in range(count):
        print(SessionClient.get_tracker(f"sigterm-{i}").session_id, flush=True)

threading.Thread(target=make).start()
while not stop.wait(0.05):
    pass
print("main returned", flush=True)
"""

PROGRAM_HANDLER_AFTER_CHAINING = """
import signal, sys, threading
import session_monitor
from session_monitor import ClientConfig, SessionClient, get_agent

url, count = sys.argv[1], int(sys.argv[2])
previous = None

def on_term(signum, frame):  # installed after the monitor's, and calls it (as uvicorn does)
    print("program handler ran", flush=True)
    if callable(previous):
        previous(signum, frame)

def make():
    get_agent(ClientConfig(server_url=url, flush_delay_s=0.02, sync_interval_s=60, sync_interval_from_env=True))
    for i in range(count):
        print(SessionClient.get_tracker(f"sigterm-{i}").session_id, flush=True)

previous = signal.signal(signal.SIGTERM, on_term)
worker = threading.Thread(target=make)
worker.start()
worker.join()
threading.Event().wait()
"""

NO_AGENT = """
import session_monitor, sys, threading
print("ready", flush=True)
threading.Event().wait()
"""

CHILDREN = {
    "worker-thread-first": (WORKER_THREAD_FIRST, 128 + signal.SIGTERM, None),
    "imported-on-a-worker-under-tornado": (IMPORTED_ON_A_WORKER_UNDER_TORNADO, 128 + signal.SIGTERM, None),
    "program-handler-first": (PROGRAM_HANDLER_FIRST, 0, "main returned"),
    "program-handler-after-chaining": (PROGRAM_HANDLER_AFTER_CHAINING, 128 + signal.SIGTERM, "program handler ran"),
}


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}", run_reaper=False)
    with serve_in_thread(create_app(settings)) as url:
        yield url


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SESSION_MONITOR_")}


def live(url: str, ids: list[str]) -> list[str]:
    """The sessions the server lists live (not those it does not know yet)."""
    with httpx.Client(base_url=url, timeout=10) as client:
        answers = {sid: client.get(f"/sessions/{sid}") for sid in ids}
    return [sid for sid, r in answers.items() if r.status_code == 200 and r.json()["ended_at"] is None]


@pytest.mark.parametrize("case", list(CHILDREN))
def test_sigterm_ends_every_session(server_url: str, case: str) -> None:
    script, returncode, says = CHILDREN[case]
    child = subprocess.Popen(
        [sys.executable, "-c", script, server_url, str(SESSIONS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        assert child.stdout is not None
        ids = [child.stdout.readline().strip() for _ in range(SESSIONS)]
        assert all(ids), child.communicate(timeout=10)
        wait_until(lambda: len(live(server_url, ids)) == SESSIONS, timeout_s=20)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
    assert child.returncode == returncode, (child.returncode, err[-2000:])
    if says:
        assert says in out, out
    assert live(server_url, ids) == [], err[-2000:]  # at once: the agent's last sync, not the server's lost-agent check
    with httpx.Client(base_url=server_url, timeout=10) as client:
        rows = [client.get(f"/sessions/{sid}").json() for sid in ids]
    assert {(r["end_reason"], r["ended_by"]) for r in rows} == {("process_exit", "agent")}


def test_sigterm_without_an_agent_still_kills_by_default(tmp_path: Path) -> None:
    """Importing the monitor changes nothing for a process with no tracker: SIGTERM's default action."""
    child = subprocess.Popen(
        [sys.executable, "-c", NO_AGENT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate(timeout=10)
    assert child.returncode == -signal.SIGTERM
