"""The client (trackers and the process's agent) against a real server in a thread, and in child processes.

The server is the real app under uvicorn; nothing of it is mocked. Its sync interval is 60 s unless a test
says otherwise, so a kill that arrives within the few seconds a test waits came through the long-poll, not
through the sync answers (the fallback). Nothing here is timed except the "never waits on the network"
checks, whose bound is generous: a call that waited on the network would take the request timeout.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bokeh
import httpx
import panel
import pytest
from fastapi import FastAPI

from session_monitor import ClientConfig, SessionClient
from session_monitor.client import agent as agent_module
from session_monitor.client.agent import Agent
from session_monitor.server import Settings, create_app
from tests.conftest import DatabaseTarget
from tests.helpers import free_port, serve_in_thread, wait_until

FAST_SYNC_S = 0.5
"""Sync interval of the tests about outages: sessions must be back within about this long."""

CALL_BOUND_S = 0.05
"""Bound on one task()/set_status() call: they take tens of microseconds, a wait on the network would take
the request timeout (seconds) while the server hangs. Not 5 ms: a thread waiting for the GIL alone can take
the 5 ms switch interval, and this is a functional check, not a benchmark."""


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    """No tracker or agent left over, before or after (the root conftest removes SESSION_MONITOR_* variables)."""
    SessionClient.reset()
    agent_module.reset()
    yield
    SessionClient.reset()
    agent_module.reset()


@dataclass
class Server:
    url: str
    app: FastAPI

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, timeout=10)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=10, **kwargs)

    def session(self, session_id: str) -> dict[str, Any] | None:
        response = self.get(f"/sessions/{session_id}")
        return response.json() if response.status_code == 200 else None

    def state(self, session_id: str) -> tuple[str, str | None] | None:
        """(status, current_task) of a live session; None while the server does not have it live."""
        found = self.session(session_id)
        if found is None or found["ended_at"] is not None:
            return None
        return found["status"], found["current_task"]

    def end_reason(self, session_id: str) -> str | None:
        found = self.session(session_id)
        return None if found is None else found["end_reason"]

    def waiting_polls(self) -> int:
        return int(self.app.state.hub.waiting)

    def syncs(self) -> int:
        """Agent syncs the server has answered."""
        return int(self.app.state.metrics.registry.get_sample_value("session_monitor_heartbeats_total") or 0)


@pytest.fixture
def server(db_target: DatabaseTarget) -> Iterator[Server]:
    app = create_app(db_target.settings(sync_interval_s=60.0))
    with serve_in_thread(app) as url:
        yield Server(url, app)


def client_config(url: str, **overrides: Any) -> ClientConfig:
    values: dict[str, Any] = {
        "server_url": url,
        "sync_interval_s": FAST_SYNC_S,
        "flush_delay_s": 0.02,
        "long_poll_s": 10.0,
        "request_timeout_s": 5.0,
    }
    values.update(overrides)
    return ClientConfig(**values)


def start_agent(url: str, **overrides: Any) -> Agent:
    """The process's agent (what get_tracker uses), with short test intervals."""
    return agent_module.get_agent(client_config(url, **overrides))


@pytest.fixture
def agent(server: Server) -> Iterator[Agent]:
    # Learns the server's 60 s interval at its first sync: only the long-poll delivers kills in time.
    yield start_agent(server.url)
    SessionClient.reset()
    agent_module.reset()  # before the server stops: its long-poll ends with it


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def callback(self, name: str) -> Any:
        def on_kill() -> None:
            with self.lock:
                self.counts[name] = self.counts.get(name, 0) + 1

        return on_kill

    def __getitem__(self, name: str) -> int:
        with self.lock:
            return self.counts.get(name, 0)


class Timed:
    """Runs tracker calls and keeps the longest one."""

    def __init__(self) -> None:
        self.longest_s = 0.0
        self.calls = 0

    def __call__(self, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args)
        self.longest_s = max(self.longest_s, time.perf_counter() - start)
        self.calls += 1
        return result

    def work(self, tracker: SessionClient, rounds: int) -> None:
        for i in range(rounds):
            task = tracker.task(f"step {i}")
            self(task.__enter__)
            self(tracker.set_status, "running", f"inner {i}")
            self(task.__exit__, None, None, None)


# -- a live server ---------------------------------------------------------------------------------------------------


def test_a_trackers_session_appears_with_its_process_and_status(server, agent):
    tracker = SessionClient.get_tracker("reports", user_id="ada")
    tracker.set_status("waiting", task="user input")
    wait_until(lambda: server.state(tracker.session_id) == ("waiting", "user input"))
    found = server.session(tracker.session_id)
    assert found is not None
    assert (found["app_name"], found["user_id"]) == ("reports", "ada")
    assert (found["host"], found["pid"], found["agent_id"]) == (socket.gethostname(), os.getpid(), agent.agent_id)
    listed = server.get("/sessions", app="reports").json()["sessions"]
    assert [s["session_id"] for s in listed] == [tracker.session_id]


def test_a_tasks_status_is_visible_while_it_runs_and_idle_after(server, agent):
    tracker = SessionClient.get_tracker("reports")
    with tracker.task("crunch numbers"):
        wait_until(lambda: server.state(tracker.session_id) == ("running", "crunch numbers"))
        assert server.session(tracker.session_id)["task_started_at"] is not None
    wait_until(lambda: server.state(tracker.session_id) == ("idle", None))


def test_a_kill_reaches_on_kill_through_the_long_poll(server, agent):
    tracker = SessionClient.get_tracker("reports")
    bystander = SessionClient.get_tracker("billing")
    calls = Counter()
    tracker.on_kill(calls.callback("reports"))
    bystander.on_kill(calls.callback("billing"))
    wait_until(lambda: server.state(tracker.session_id) and server.state(bystander.session_id))
    wait_until(lambda: server.waiting_polls() >= 1)

    response = server.post(f"/sessions/{tracker.session_id}/kill", json={"reason": "maintenance"})
    assert response.status_code == 200, response.text
    wait_until(lambda: calls["reports"] == 1)
    wait_until(lambda: server.end_reason(tracker.session_id) == "killed")
    assert tracker.ended and tracker.kill_reason == "maintenance"
    assert calls["reports"] == 1 and calls["billing"] == 0
    assert server.state(bystander.session_id) == ("idle", None)
    assert SessionClient.get_tracker("reports") is not tracker


def test_kill_all_kills_only_that_apps_trackers(server, agent, sessions):
    calls = Counter()
    trackers: dict[str, SessionClient] = {}
    for key, app in [("alpha-1", "alpha"), ("alpha-2", "alpha"), ("beta-1", "beta")]:
        with sessions.current(key):
            trackers[key] = SessionClient.get_tracker(app)
        trackers[key].on_kill(calls.callback(key))
    trackers["gamma"] = SessionClient.get_tracker("gamma")  # outside any session
    trackers["gamma"].on_kill(calls.callback("gamma"))
    wait_until(lambda: all(server.state(t.session_id) for t in trackers.values()))
    wait_until(lambda: server.waiting_polls() >= 1)

    response = server.post("/apps/alpha/kill-all")
    assert response.status_code == 200 and response.json()["killed_count"] == 2
    wait_until(lambda: calls["alpha-1"] == 1 and calls["alpha-2"] == 1)
    wait_until(lambda: [server.end_reason(f"alpha-{i}") for i in (1, 2)] == ["killed", "killed"])
    assert calls["beta-1"] == 0 and calls["gamma"] == 0
    assert not trackers["beta-1"].ended and not trackers["gamma"].ended
    assert server.state("beta-1") == ("idle", None) and server.state(trackers["gamma"].session_id) == ("idle", None)


def test_agents_shows_the_process(server, agent):
    for app in ("one", "two", "three"):
        SessionClient.get_tracker(app)

    def mine() -> dict[str, Any] | None:
        rows = server.get("/agents").json()["agents"]
        row = next((r for r in rows if r["agent_id"] == agent.agent_id), None)
        return row if row is not None and row["session_count"] == 3 else None

    row = wait_until(mine)
    assert (row["host"], row["pid"]) == (socket.gethostname(), os.getpid())
    assert row["versions"]["python"] == platform.python_version()
    assert row["versions"]["panel"] == panel.__version__ and row["versions"]["bokeh"] == bokeh.__version__
    assert row["cpu_percent"] is not None and row["cpu_percent"] >= 0
    assert row["rss_bytes"] > 1_000_000
    assert row["apps"] == ["one", "three", "two"]
    assert row["command"] and row["exited_at"] is None and not row["is_stale"]


def test_a_stopped_agent_leaves_no_long_poll_behind(server, agent):
    SessionClient.get_tracker("reports")
    wait_until(lambda: server.waiting_polls() == 1)
    agent_module.reset()  # the process's agent stops (its long-poll was to be held 10 s more)
    wait_until(lambda: server.waiting_polls() == 0, timeout_s=3)


def test_stop_ends_the_session_closed(server, agent):
    tracker = SessionClient.get_tracker("reports")
    calls = Counter()
    tracker.on_kill(calls.callback("reports"))
    wait_until(lambda: server.state(tracker.session_id))
    tracker.stop()
    assert calls["reports"] == 1
    wait_until(lambda: server.end_reason(tracker.session_id) == "closed")
    history = server.get("/history", reason="closed").json()["sessions"]
    assert [s["session_id"] for s in history] == [tracker.session_id]


# -- outages ---------------------------------------------------------------------------------------------------------


def sqlite_settings(path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": f"sqlite:///{path}", "run_reaper": False}
    values.update(overrides)
    return Settings(**values)


def test_server_down_at_start_then_up(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="session_monitor.client.agent")
    port = free_port()  # nothing listens there yet
    agent = start_agent(f"http://127.0.0.1:{port}", sync_interval_from_env=True)
    timed = Timed()
    trackers = [SessionClient.get_tracker(app) for app in ("one", "two", "three")]
    timed(trackers[1].set_status, "waiting", "for the monitor")
    wait_until(lambda: agent._urls.online is False)  # it tried, and failed
    for tracker in trackers:
        timed.work(tracker, 50)
    open_task = trackers[2].task("long job")
    timed(open_task.__enter__)
    assert timed.longest_s < CALL_BOUND_S, timed.longest_s

    expected = {
        trackers[0].session_id: ("idle", None),
        trackers[1].session_id: ("waiting", "for the monitor"),
        trackers[2].session_id: ("running", "long job"),
    }
    app = create_app(sqlite_settings(tmp_path / "db.sqlite3"))
    with serve_in_thread(app, port=port) as url:
        server = Server(url, app)
        wait_until(lambda: {sid: server.state(sid) for sid in expected} == expected, timeout_s=5)
        timed(open_task.__exit__, None, None, None)
        wait_until(lambda: server.state(trackers[2].session_id) == ("idle", None))
        agent_module.reset()

    mine = [r for r in caplog.records if r.name == "session_monitor.client.agent"]
    assert [r.levelname for r in mine if r.levelno >= logging.WARNING] == ["WARNING"]
    assert len([r for r in mine if "reachable again" in r.getMessage()]) == 1


class HungServer:
    """Accepts connections and never answers: a server stuck on its database, or a dead backend behind a proxy."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.connections:
            conn.close()
        self.sock.close()


def test_hung_server_never_blocks_the_app_and_a_real_one_gets_the_sessions(tmp_path):
    port = free_port()
    hung = HungServer(port)
    try:
        start_agent(f"http://127.0.0.1:{port}", sync_interval_from_env=True)
        timed = Timed()
        trackers = [SessionClient.get_tracker(app) for app in ("one", "two")]
        wait_until(lambda: len(hung.connections) >= 2)  # a sync and the long-poll, both stuck
        for tracker in trackers:
            timed.work(tracker, 50)
        timed(trackers[0].set_status, "waiting", "hung monitor")
        assert timed.longest_s < CALL_BOUND_S, timed.longest_s
    finally:
        hung.close()

    app = create_app(sqlite_settings(tmp_path / "db.sqlite3"))
    with serve_in_thread(app, port=port) as url:
        server = Server(url, app)
        expected = {trackers[0].session_id: ("waiting", "hung monitor"), trackers[1].session_id: ("idle", None)}
        wait_until(lambda: {sid: server.state(sid) for sid in expected} == expected, timeout_s=5)
        agent_module.reset()


def test_server_restarted_with_an_empty_database(tmp_path):
    database = tmp_path / "monitor.sqlite3"
    port = free_port()
    agent = start_agent(f"http://127.0.0.1:{port}", long_poll_s=3.0)
    calls = Counter()
    trackers: dict[str, SessionClient] = {}

    first = create_app(sqlite_settings(database, sync_interval_s=FAST_SYNC_S))
    with serve_in_thread(first, port=port) as url:
        server = Server(url, first)
        for app in ("one", "two", "three"):
            trackers[app] = SessionClient.get_tracker(app)
            trackers[app].on_kill(calls.callback(app))
        trackers["two"].set_status("waiting", "input")
        wait_until(lambda: all(server.state(t.session_id) for t in trackers.values()))
        wait_until(lambda: server.waiting_polls() >= 1)
        assert server.post(f"/sessions/{trackers['one'].session_id}/kill").status_code == 200
        wait_until(lambda: calls["one"] == 1 and server.end_reason(trackers["one"].session_id) == "killed")
        assert agent._cursor >= 1  # the agent has seen a command of this database

    for path in tmp_path.glob("monitor.sqlite3*"):
        path.unlink()
    trackers["three"].set_status("running", "while the monitor restarts")

    # From now on the agent syncs only on changes: a kill must come through the long-poll.
    second = create_app(sqlite_settings(database, sync_interval_s=60.0))
    with serve_in_thread(second, port=port) as url:
        server = Server(url, second)
        expected = {
            trackers["two"].session_id: ("waiting", "input"),
            trackers["three"].session_id: ("running", "while the monitor restarts"),
        }
        wait_until(lambda: {sid: server.state(sid) for sid in expected} == expected, timeout_s=5)
        assert server.session(trackers["one"].session_id) is None  # an ended session is not brought back
        wait_until(lambda: server.waiting_polls() >= 1)

        # Its command ids start over below the agent's cursor.
        assert server.post(f"/sessions/{trackers['two'].session_id}/kill").status_code == 200
        wait_until(lambda: calls["two"] == 1)
        wait_until(lambda: server.end_reason(trackers["two"].session_id) == "killed")
        assert calls["three"] == 0 and server.state(trackers["three"].session_id) is not None
        agent_module.reset()


def test_a_kill_while_the_agent_is_away_reaches_it_when_it_is_back(tmp_path):
    database = tmp_path / "monitor.sqlite3"
    port = free_port()
    start_agent(f"http://127.0.0.1:{port}", long_poll_s=1.0)
    calls = Counter()
    first = create_app(sqlite_settings(database, sync_interval_s=60.0))
    with serve_in_thread(first, port=port) as url:
        server = Server(url, first)
        doomed, spared = SessionClient.get_tracker("doomed"), SessionClient.get_tracker("spared")
        doomed.on_kill(calls.callback("doomed"))
        spared.on_kill(calls.callback("spared"))
        wait_until(lambda: server.state(doomed.session_id) and server.state(spared.session_id))

    # The agent's server is gone; an operator kills through another server on the same database.
    replica = create_app(sqlite_settings(database))
    with serve_in_thread(replica) as url:
        response = Server(url, replica).post(f"/sessions/{doomed.session_id}/kill", json={"reason": "while away"})
        assert response.status_code == 200, response.text
    assert calls["doomed"] == 0

    back = create_app(sqlite_settings(database, sync_interval_s=60.0))
    with serve_in_thread(back, port=port) as url:
        server = Server(url, back)
        wait_until(lambda: calls["doomed"] == 1)
        wait_until(lambda: server.end_reason(doomed.session_id) == "killed")
        assert doomed.kill_reason == "while away"
        assert calls["spared"] == 0 and server.state(spared.session_id) == ("idle", None)
        agent_module.reset()


# -- process exit ----------------------------------------------------------------------------------------------------

CHILD = r"""
import asyncio, signal, sys, threading
import httpx
from session_monitor import ClientConfig, SessionClient, get_agent

url = sys.argv[1]
# As in an interactive program, even if the test runner started us with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
get_agent(ClientConfig(server_url=url, sync_interval_s=30, flush_delay_s=0.02, long_poll_s=1.0,
                       sync_interval_from_env=True))

def still_live(session_id):
    return httpx.get(f"{url}/sessions/{session_id}", timeout=5).json()["ended_at"] is None

def sync_callback(app, session_id):
    def on_kill():
        print(f"on_kill {app} live={still_live(session_id)}", flush=True)
    return on_kill

def async_callback(app, session_id):
    async def on_kill():
        await asyncio.sleep(0)
        print(f"on_kill {app} live={still_live(session_id)}", flush=True)
    return on_kill

for app in ("exit-a", "exit-b", "exit-c"):
    tracker = SessionClient.get_tracker(app)
    make = async_callback if app == "exit-c" else sync_callback
    tracker.on_kill(make(app, tracker.session_id))
    tracker.set_status("running", task="serving")
    print(tracker.session_id, flush=True)

# A worker thread (not a daemon, as threads are by default) that on_kill stops: Python waits for it
# before exiting, so the callbacks must not wait for the threads.
stop = threading.Event()
tracker.on_kill(stop.set)

def work():
    with tracker.task("background job"):
        stop.wait()
    print("worker stopped", flush=True)

threading.Thread(target=work).start()
sys.stdin.readline()
"""

APPS = ("exit-a", "exit-b", "exit-c")


def start_child(url: str) -> tuple[subprocess.Popen[str], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_MONITOR_")}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    ids = [child.stdout.readline().strip() for _ in APPS]
    if not all(ids):
        child.kill()
        raise AssertionError(f"child failed to start: {child.communicate(timeout=10)}")
    return child, ids


CHILD_STATES = [("running", "serving"), ("running", "serving"), ("running", "background job")]


def finish_child(child: subprocess.Popen[str], how: str) -> tuple[str, str]:
    if how == "normal":
        assert child.stdin is not None
        child.stdin.write("\n")
        child.stdin.flush()
    else:
        os.kill(child.pid, signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    try:
        return child.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(child.pid, signal.SIGKILL)
        out, err = child.communicate(timeout=10)
        raise AssertionError(f"the child did not exit within 20 s; stdout: {out!r}; stderr: {err[-2000:]!r}") from None


def check_exit(server: Server, child_pid: int, ids: list[str], out: str, err: str, syncs_before: int) -> None:
    assert "last sync failed" not in err and "Exception ignored" not in err, err
    assert server.syncs() == syncs_before + 1  # every end in one request
    for app in APPS:
        assert out.count(f"on_kill {app} ") == 1, out
        assert f"on_kill {app} live=True" in out, out  # callbacks ran before the server was told
    assert out.count("worker stopped") == 1, out
    for session_id in ids:
        found = server.session(session_id)
        assert found is not None
        assert (found["end_reason"], found["ended_by"]) == ("process_exit", "agent"), found
    exited = server.get("/history", reason="process_exit").json()["sessions"]
    assert sorted(s["session_id"] for s in exited) == sorted(ids)
    agents = server.get("/agents", include_exited="true").json()["agents"]
    row = next(r for r in agents if r["pid"] == child_pid)
    assert row["exited_at"] is not None


@pytest.mark.parametrize("how", ["normal", "sigterm", "sigint"])
def test_process_exit_ends_every_session_after_its_callbacks(tmp_path, how):
    app = create_app(sqlite_settings(tmp_path / "db.sqlite3", sync_interval_s=60.0))
    with serve_in_thread(app) as url:
        server = Server(url, app)
        child, ids = start_child(url)
        wait_until(lambda: [server.state(sid) for sid in ids] == CHILD_STATES)
        syncs_before = server.syncs()
        out, err = finish_child(child, how)
        if how == "normal":
            assert child.returncode == 0, err
        elif how == "sigterm":
            assert child.returncode == 128 + signal.SIGTERM, err
        else:
            assert "KeyboardInterrupt" in err
        check_exit(server, child.pid, ids, out, err, syncs_before)


def test_process_exit_with_a_host_name_after_the_monitor_restarted(tmp_path):
    # The last sync then needs a new connection, and so a name resolution, while the interpreter exits.
    database = tmp_path / "db.sqlite3"
    port = free_port()
    first = create_app(sqlite_settings(database, sync_interval_s=60.0))
    with serve_in_thread(first, port=port):
        url = f"http://localhost:{port}"
        server = Server(url, first)
        child, ids = start_child(url)
        wait_until(lambda: [server.state(sid) for sid in ids] == CHILD_STATES)
    second = create_app(sqlite_settings(database, sync_interval_s=60.0))
    with serve_in_thread(second, port=port):
        server = Server(url, second)
        wait_until(lambda: server.waiting_polls() >= 1)  # the child's long-poll is back; its sync is idle
        syncs_before = server.syncs()
        out, err = finish_child(child, "normal")
        assert child.returncode == 0, err
        check_exit(server, child.pid, ids, out, err, syncs_before)
