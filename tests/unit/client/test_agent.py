"""The agent against an in-memory server (``httpx.MockTransport``): batching, outages, commands, process facts."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import panel
import pytest

from session_monitor import ConfigError, __version__, defaults
from session_monitor.client import sessions as sessions_module
from session_monitor.client.agent import Agent, SessionRecord, redacted_command
from session_monitor.client.config import resolve_config
from session_monitor.protocol import AgentInfo
from tests.helpers import wait_until
from tests.unit.client import FakeServer

AGENT_LOGGER = "session_monitor.client.agent"


@pytest.fixture
def make_agent(server: FakeServer) -> Iterator[Any]:
    """Agents on the fake server, stopped after the test (never the process's own agent)."""
    made: list[Agent] = []

    def make(**overrides: Any) -> Agent:
        agent = server.agent(**overrides)
        made.append(agent)
        return agent

    yield make
    server.down = False
    server.release()
    for agent in made:
        agent.stop(timeout_s=2.0)


def record(session_id: str, app_name: str = "app") -> SessionRecord:
    return SessionRecord(session_id, app_name, None, started_at=datetime.now(UTC))


def set_status(agent: Agent, rec: SessionRecord, status: str, task: str | None = None) -> None:
    """What a tracker does: change the record in place under the agent's lock, then mark it changed."""
    with agent.lock:
        rec.status = status
        rec.current_task = task
        agent.changed(rec.session_id)


def ignore_kill(reason: str | None) -> None:
    pass


def synced_once(agent: Agent) -> bool:
    return agent.syncs >= 1


def synced(server: FakeServer, count: int) -> bool:
    with server.lock:
        return len(server.syncs) >= count


def sync_at(server: FakeServer, index: int) -> dict[str, Any]:
    wait_until(lambda: synced(server, index + 1))
    with server.lock:
        return server.syncs[index]


# -- batching ------------------------------------------------------------------------------------------------------


def test_status_changes_between_two_syncs_coalesce_into_one_upsert_per_session(server, make_agent):
    agent = make_agent()
    a, b = record("sess-a"), record("sess-b")
    server.hold()
    agent.track(a, ignore_kill)
    first = sync_at(server, 0)  # in flight until released: everything below lands in the next sync
    assert first["full"] is True
    assert [s["session_id"] for s in first["sessions"]] == ["sess-a"]

    agent.track(b, ignore_kill)
    for i in range(300):
        set_status(agent, a, "running", f"step {i}")
        set_status(agent, b, "running" if i % 2 else "idle", f"other {i}")
    set_status(agent, b, "idle", None)
    server.release()

    second = sync_at(server, 1)
    assert second["full"] is False
    by_id = {s["session_id"]: s for s in second["sessions"]}
    assert len(second["sessions"]) == 2 == len(by_id)
    assert (by_id["sess-a"]["status"], by_id["sess-a"]["current_task"]) == ("running", "step 299")
    assert (by_id["sess-b"]["status"], by_id["sess-b"]["current_task"]) == ("idle", None)

    # Nothing changed since: the next syncs are heartbeats that carry no session.
    third = sync_at(server, 2)
    assert third["sessions"] == [] and third["ended"] == [] and third["full"] is False
    assert len(server.sessions_sent("sess-a")) == 2


def test_one_request_carries_many_sessions(server, make_agent):
    agent = make_agent()
    server.hold()
    agent.track(record("first"), ignore_kill)
    sync_at(server, 0)
    ids = [f"sess-{i}" for i in range(250)]
    for sid in ids:
        agent.track(record(sid, app_name=f"app-{int(sid[5:]) % 3}"), ignore_kill)
    server.release()

    body = sync_at(server, 1)
    assert sorted(s["session_id"] for s in body["sessions"]) == sorted(ids)
    assert {s["app_name"] for s in body["sessions"]} == {"app-0", "app-1", "app-2"}
    assert agent.session_count == 251


def test_ends_are_carried_and_dropped_once_acknowledged(server, make_agent):
    agent = make_agent()
    for sid in ("keep", "gone-1", "gone-2"):
        agent.track(record(sid), ignore_kill)
    wait_until(lambda: agent.syncs >= 1)

    server.down = True
    failed = server.failed_syncs
    agent.end("gone-1", "closed")
    agent.end("gone-2", "process_exit")
    agent.end("never-tracked", "closed")  # ignored
    wait_until(lambda: server.failed_syncs >= failed + 2)
    assert set(agent.sessions.ended) == {"gone-1", "gone-2"}  # kept until the server has them

    server.down = False
    wait_until(lambda: not agent.sessions.ended)
    ends = server.ends_sent()
    assert sorted((e["session_id"], e["reason"]) for e in ends) == [("gone-1", "closed"), ("gone-2", "process_exit")]
    assert agent.session_count == 1

    # Acknowledged ends are not sent again.
    count = len(server.syncs)
    sync_at(server, count + 1)
    assert len(server.ends_sent()) == 2


def test_resync_answer_makes_the_next_sync_full(server, make_agent):
    agent = make_agent()
    for sid in ("a", "b", "c"):
        agent.track(record(sid), ignore_kill)
    wait_until(lambda: agent.syncs >= 1 and not agent.sessions.full)

    server.resync_next = True
    wait_until(lambda: True in server.answered_resync)
    index = server.answered_resync.index(True)
    after = sync_at(server, index + 1)
    assert after["full"] is True
    assert sorted(s["session_id"] for s in after["sessions"]) == ["a", "b", "c"]
    # Once the server knows the agent again, syncs go back to carrying changes only.
    assert sync_at(server, index + 2)["full"] is False


def test_failed_sync_resends_everything_when_the_server_is_back(server, make_agent):
    agent = make_agent()
    a, b = record("a"), record("b")
    agent.track(a, ignore_kill)
    agent.track(b, ignore_kill)
    wait_until(lambda: agent.syncs >= 1 and not agent.sessions.full)

    server.down = True
    failed = server.failed_syncs
    set_status(agent, a, "running", "while down")
    wait_until(lambda: server.failed_syncs >= failed + 2)
    count = len(server.syncs)
    server.down = False

    back = sync_at(server, count)
    assert back["full"] is True
    by_id = {s["session_id"]: s for s in back["sessions"]}
    assert set(by_id) == {"a", "b"}
    assert (by_id["a"]["status"], by_id["a"]["current_task"]) == ("running", "while down")
    wait_until(lambda: agent.online)


def test_memory_stays_bounded_while_offline(server, make_agent, monkeypatch):
    monkeypatch.setattr(sessions_module, "MAX_PENDING_ENDS", 5)
    monkeypatch.setattr(sessions_module, "MAX_REMEMBERED_KILLS", 5)
    server.down = True
    agent = make_agent()
    records = [record(f"live-{i}") for i in range(3)]
    for rec in records:
        agent.track(rec, ignore_kill)
    wait_until(lambda: server.failed_syncs >= 2)

    for i in range(20_000):
        set_status(agent, records[i % 3], "running", f"task {i}")
    assert len(agent.sessions.records) == 3
    assert len(agent.sessions.dirty) <= 3
    assert len(agent.sessions.handlers) == 3
    assert not agent.sessions.ended

    for i in range(40):
        agent.track(record(f"short-{i}"), ignore_kill)
        agent.end(f"short-{i}", "closed")
    assert list(agent.sessions.ended) == [f"short-{i}" for i in range(35, 40)]  # the latest ends, no more
    assert len(agent.sessions.records) == 3 and len(agent.sessions.handlers) == 3

    for i in range(40):
        agent.remember_kill(f"killed-{i}")
    assert len(agent.sessions.killed) == 5 and agent.was_killed("killed-39") and not agent.was_killed("killed-0")

    # Once back, the latest state of each live session is what the server gets.
    count = len(server.syncs)
    server.down = False
    back = sync_at(server, count)
    assert back["full"] is True
    assert {s["session_id"]: s["current_task"] for s in back["sessions"]} == {
        "live-0": "task 19998",
        "live-1": "task 19999",
        "live-2": "task 19997",
    }


def test_one_warning_per_outage_and_one_info_when_back(server, make_agent, caplog):
    caplog.set_level(logging.DEBUG, logger=AGENT_LOGGER)
    server.down = True  # down at start
    agent = make_agent()
    agent.track(record("a"), ignore_kill)
    wait_until(lambda: server.failed_syncs >= 4)
    server.down = False
    wait_until(lambda: agent.online)

    server.down = True
    failed = server.failed_syncs
    agent.track(record("b"), ignore_kill)  # a change: the agent tries at once, and fails
    wait_until(lambda: server.failed_syncs >= failed + 3)
    server.down = False
    wait_until(lambda: agent.online)

    mine = [r for r in caplog.records if r.name == AGENT_LOGGER]
    warnings = [r for r in mine if r.levelno >= logging.WARNING]
    back = [r for r in mine if r.levelno == logging.INFO and "reachable again" in r.getMessage()]
    assert len(warnings) == 2, [r.getMessage() for r in warnings]
    assert all("unreachable" in r.getMessage() for r in warnings)
    assert len(back) == 2
    assert "1 sessions" in back[0].getMessage() and "2 sessions" in back[1].getMessage()


# -- commands ------------------------------------------------------------------------------------------------------


def test_kill_from_the_long_poll_calls_the_sessions_handler(server, make_agent):
    agent = make_agent()
    calls: dict[str, list[str | None]] = {"a": [], "b": []}
    agent.track(record("a"), calls["a"].append)
    agent.track(record("b"), calls["b"].append)
    wait_until(lambda: server.polls >= 1)

    server.push({"id": 1, "kind": "kill", "session_id": "a", "reason": "maintenance"})
    wait_until(lambda: calls["a"] == ["maintenance"])
    assert calls["b"] == []
    assert agent.was_killed("a") and not agent.was_killed("b")

    # A kill for a session this process does not have is remembered (a reconnect under it is refused).
    server.push({"id": 2, "kind": "kill", "session_id": "elsewhere", "reason": None})
    wait_until(lambda: agent.was_killed("elsewhere"))


def test_kill_in_a_sync_answer_reaches_the_handler(server, make_agent):
    agent = make_agent(long_poll_s=0.3)
    calls: list[str | None] = []
    server.sync_commands = [{"id": 0, "kind": "kill", "session_id": "a", "reason": "stored intent"}]
    agent.track(record("a"), calls.append)
    wait_until(lambda: calls)
    assert calls[0] == "stored intent"


def test_unknown_and_malformed_commands_are_logged_and_ignored(server, make_agent, caplog):
    caplog.set_level(logging.WARNING, logger=AGENT_LOGGER)
    agent = make_agent()
    calls: list[str | None] = []
    agent.track(record("a"), calls.append)
    wait_until(lambda: server.polls >= 1)

    server.push({"id": 1, "kind": "reboot", "session_id": "a"})
    wait_until(lambda: any("reboot" in r.getMessage() for r in caplog.records))
    server.push("kill", None, {"id": 3, "kind": "kill", "session_id": 42})
    polls = server.polls
    wait_until(lambda: server.polls >= polls + 2)
    assert calls == [] and not agent.was_killed("a")

    # The command loop is still alive: a real kill gets through.
    server.push({"id": 4, "kind": "kill", "session_id": "a", "reason": "now"})
    wait_until(lambda: calls == ["now"])
    unknown = [r for r in caplog.records if "unknown command kind" in r.getMessage()]
    assert len(unknown) == 1 and "'reboot'" in unknown[0].getMessage()


def test_a_failing_kill_handler_is_logged_and_the_agent_goes_on(server, make_agent, caplog):
    caplog.set_level(logging.ERROR, logger=AGENT_LOGGER)
    agent = make_agent()
    calls: list[str | None] = []

    def broken(reason: str | None) -> None:
        raise RuntimeError("handler bug")

    agent.track(record("a"), broken)
    agent.track(record("b"), calls.append)
    server.push(
        {"id": 1, "kind": "kill", "session_id": "a", "reason": None},
        {"id": 2, "kind": "kill", "session_id": "b", "reason": "second"},
    )
    wait_until(lambda: calls == ["second"])
    assert any("kill handler failed" in r.getMessage() and r.exc_info for r in caplog.records)


# -- process facts -------------------------------------------------------------------------------------------------


def test_redacted_command_hides_secret_values():
    argv = [
        "/usr/bin/python",
        "-m",
        "panel",
        "serve",
        "app.py",
        "--token",
        "tok-123",
        "--password=hunter2",
        "--API-KEY=k-456",
        "--cookie-secret",
        "c-789",
        "--port",
        "5006",
        "--db",
        "postgresql://monitor:pg-pass@db.internal:5432/sessions",
        "evil\x1b[2Jname\n",
    ]
    text = redacted_command(argv)
    for secret in ("tok-123", "hunter2", "k-456", "c-789", "pg-pass"):
        assert secret not in text
    assert "--token *** --password=*** --API-KEY=*** --cookie-secret ***" in text
    assert "--port 5006" in text and "app.py" in text and "monitor" in text and "db.internal:5432" in text
    assert text.isprintable()
    assert len(redacted_command(["x" * 5000])) == 1000


def test_facts_describe_the_process(make_agent):
    agent = make_agent()
    facts = agent._facts()
    assert facts["host"] == socket.gethostname()
    assert facts["pid"] == os.getpid()
    versions = facts["versions"]
    assert versions["python"] == platform.python_version()
    assert versions["session_monitor"] == __version__
    assert versions["panel"] == panel.__version__  # reported because panel is loaded
    assert "bokeh" in versions
    assert isinstance(facts["cpu_percent"], float) and facts["cpu_percent"] >= 0
    assert isinstance(facts["rss_bytes"], int) and facts["rss_bytes"] > 1_000_000
    assert isinstance(facts["command"], str) and facts["command"]
    AgentInfo.model_validate(facts)  # what the server accepts


def test_every_sync_carries_the_facts_and_counts(server, make_agent):
    agent = make_agent()
    agent.track(record("a"), ignore_kill)
    body = sync_at(server, 0)
    assert body["agent"]["pid"] == os.getpid()
    assert body["exiting"] is False
    assert not server.refused


# -- lifecycle -----------------------------------------------------------------------------------------------------


def test_stop_sends_the_last_changes_and_never_raises(server):
    # stop()'s last sync lets the thread finish and close its loop, possibly before stop() wakes it.
    for i in range(40):
        agent = server.agent()
        rec = record(f"s-{i}")
        agent.track(rec, ignore_kill)
        wait_until(partial(synced_once, agent))
        set_status(agent, rec, "running", "last words")
        agent.end(rec.session_id, "closed")
        agent.stop(timeout_s=2.0)
        assert not agent._thread.is_alive()
        assert not agent.sessions.ended  # the end reached the server before stop() returned
    assert {(e["session_id"], e["reason"]) for e in server.ends_sent()} == {(f"s-{i}", "closed") for i in range(40)}


def test_the_exiting_sync_goes_out_alone_and_last(server, monkeypatch):
    # The server marks the process exited on the exiting sync, and live again on any later one: a sync
    # in flight beside it could be applied after it.
    agent = server.agent()
    rec = record("a")
    agent.track(rec, ignore_kill)
    wait_until(lambda: agent.syncs >= 1)
    server.hold()
    set_status(agent, rec, "running", "busy")
    wait_until(lambda: server.in_flight == 1)  # a sync of the loop is in flight

    scheduled = threading.Event()
    schedule = asyncio.run_coroutine_threadsafe

    def spy(coro: Any, loop: asyncio.AbstractEventLoop) -> Any:
        future = schedule(coro, loop)
        scheduled.set()
        return future

    monkeypatch.setattr(asyncio, "run_coroutine_threadsafe", spy)
    agent.end("a", "process_exit")
    stopper = threading.Thread(target=agent.stop, kwargs={"exiting": True, "timeout_s": 5.0})
    stopper.start()
    wait_until(scheduled.is_set)
    assert agent._loop is not None
    for _ in range(5):  # a few turns of the agent's loop: the last sync has started, or is waiting its turn
        schedule(asyncio.sleep(0), agent._loop).result(timeout=5)
    server.release()
    stopper.join(timeout=10)

    assert server.max_in_flight == 1
    assert server.syncs[-1]["exiting"] is True
    assert [e["session_id"] for e in server.syncs[-1]["ended"]] == ["a"]
    assert not any(body["exiting"] for body in server.syncs[:-1])


# -- configuration ---------------------------------------------------------------------------------------------------


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("SESSION_MONITOR_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_config_argument_wins_over_environment_over_default(no_env):
    config = resolve_config()
    assert (config.server_url, config.client_token) == (defaults.SERVER_URL, None)
    assert config.sync_interval_s == defaults.SYNC_INTERVAL_S and not config.sync_interval_from_env

    no_env.setenv("SESSION_MONITOR_URL", "http://monitor.internal:8000/")
    no_env.setenv("SESSION_MONITOR_CLIENT_TOKEN", "from-the-environment-123")
    no_env.setenv("SESSION_MONITOR_SYNC_INTERVAL_S", "2.5")
    no_env.setenv("SESSION_MONITOR_FLUSH_DELAY_S", "0.1")
    config = resolve_config()
    assert (config.server_url, config.client_token) == ("http://monitor.internal:8000", "from-the-environment-123")
    assert (config.sync_interval_s, config.flush_delay_s, config.sync_interval_from_env) == (2.5, 0.1, True)

    config = resolve_config("https://other.example/", client_token="argument-token-456")
    assert (config.server_url, config.client_token) == ("https://other.example", "argument-token-456")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SESSION_MONITOR_URL", "monitor:8000"),
        ("SESSION_MONITOR_SYNC_INTERVAL_S", "soon"),
        ("SESSION_MONITOR_SYNC_INTERVAL_S", "0"),
        ("SESSION_MONITOR_FLUSH_DELAY_S", "-1"),
        ("SESSION_MONITOR_FLUSH_DELAY_S", "nan"),
    ],
)
def test_config_refuses_bad_values(no_env, name, value):
    no_env.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        resolve_config()


def test_client_token_is_sent_on_every_request(server, make_agent):
    agent = make_agent(client_token="client-token-0123456789")
    agent.track(record("a"), ignore_kill)
    wait_until(lambda: agent.syncs >= 1 and server.polls >= 1)
    with server.lock:
        headers = list(server.headers)
    assert headers and all(h["authorization"] == "Bearer client-token-0123456789" for h in headers)
    assert all(h["user-agent"] == f"panel-session-monitor/{__version__}" for h in headers)


@pytest.mark.parametrize("from_env", [False, True])
def test_the_server_sets_the_sync_interval_unless_the_environment_did(server, make_agent, from_env):
    server.sync_interval_s = 7.0
    agent = make_agent(sync_interval_from_env=from_env)
    agent.track(record("a"), ignore_kill)
    wait_until(lambda: agent.syncs >= 1)
    assert agent._sync_interval_s == (0.2 if from_env else 7.0)
