"""``SessionClient`` against an in-memory server: trackers per session, tasks, status, on_kill, threads."""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from session_monitor import ConfigError, SessionClient
from session_monitor.client import exiting, threads
from session_monitor.client.callbacks import run_in_background
from session_monitor.protocol import MAX_TASK
from tests.helpers import wait_until
from tests.unit.client import FakeServer

CALLBACKS_LOGGER = "session_monitor.client.callbacks"


def last_state(server: FakeServer, session_id: str) -> tuple[str, str | None] | None:
    sent = server.sessions_sent(session_id)
    return (sent[-1]["status"], sent[-1]["current_task"]) if sent else None


def run_in_thread(fn: Any) -> Any:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(timeout=10)
    return out[0]


# -- get_tracker ---------------------------------------------------------------------------------------------------


def test_outside_panel_one_tracker_per_app_until_stopped(agent, server):
    first = SessionClient.get_tracker("reports", user_id="ada")
    assert SessionClient.get_tracker("reports") is first
    assert SessionClient.get_tracker("reports", heartbeat_interval=30) is first
    other = SessionClient.get_tracker("billing")
    assert other is not first and other.session_id != first.session_id
    wait_until(lambda: server.sessions_sent(first.session_id))
    sent = server.sessions_sent(first.session_id)[0]
    assert (sent["app_name"], sent["user_id"], sent["status"]) == ("reports", "ada", "idle")

    first.stop()
    again = SessionClient.get_tracker("reports")
    assert again is not first and again.session_id != first.session_id
    assert SessionClient.get_tracker("reports") is again
    assert first not in SessionClient.active() and again in SessionClient.active()


def test_get_tracker_uses_the_process_agent(agent, caplog):
    caplog.set_level(logging.WARNING, logger="session_monitor.client.agent")
    tracker = SessionClient.get_tracker("app", server_url="http://elsewhere.test:9999")
    assert tracker._agent is agent  # one agent per process, whatever a later server_url says
    assert any("one agent per process" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "line\nbreak", "tab\there", "nul\x00", None, 42], ids=repr)
def test_app_name_is_validated(agent, name):
    with pytest.raises(ConfigError, match="app_name"):
        SessionClient.get_tracker(name)
    assert SessionClient.active() == []


def test_app_name_at_the_limit_is_accepted(agent, server):
    tracker = SessionClient.get_tracker("é" * 200)
    wait_until(lambda: server.sessions_sent(tracker.session_id))
    assert not server.refused


def test_user_id_is_made_acceptable(agent, server):
    tracker = SessionClient.get_tracker("app", user_id="bad\x00user\n" + "u" * 300)
    wait_until(lambda: server.sessions_sent(tracker.session_id))
    user_id = server.sessions_sent(tracker.session_id)[0]["user_id"]
    assert len(user_id) == 200 and user_id.isprintable() and user_id.startswith("bad user ")
    assert not server.refused


def test_a_thread_and_an_executor_job_get_their_starters_tracker(agent, sessions):
    with sessions.current("sess-a"):
        mine = SessionClient.get_tracker("app")
        assert mine.session_id == "sess-a"
        from_thread = run_in_thread(lambda: SessionClient.get_tracker("app"))
        with ThreadPoolExecutor(max_workers=2) as pool:
            from_job = pool.submit(SessionClient.get_tracker, "app").result(timeout=10)
            # A thread started by a job still works for the session.
            nested = pool.submit(lambda: run_in_thread(lambda: SessionClient.get_tracker("app"))).result(timeout=10)
    assert from_thread is mine and from_job is mine and nested is mine

    with sessions.current("sess-b"):
        theirs = SessionClient.get_tracker("app")
    assert theirs is not mine and theirs.session_id == "sess-b"
    # Outside any session, the app's local tracker: neither of the two.
    local = SessionClient.get_tracker("app")
    assert local not in (mine, theirs)


def test_an_executor_worker_does_not_keep_an_earlier_jobs_session(agent, sessions):
    with ThreadPoolExecutor(max_workers=1) as pool:
        with sessions.current("sess-a"):
            mine = SessionClient.get_tracker("app")
            assert pool.submit(SessionClient.get_tracker, "app").result(timeout=10) is mine  # starts the worker
        # The same worker, now running a job that no session submitted.
        assert pool.submit(threads.current_key).result(timeout=10) is None
        later = pool.submit(SessionClient.get_tracker, "app").result(timeout=10)
        with sessions.current("sess-b"):
            theirs = pool.submit(SessionClient.get_tracker, "app").result(timeout=10)
    assert later is not mine and later.session_id != "sess-a"
    assert theirs.session_id == "sess-b"


def test_kill_callbacks_do_not_run_as_the_session_that_started_the_agent(agent, server, sessions):
    with sessions.current("sess-a"):
        SessionClient.get_tracker("app")  # starts the agent's thread
    local = SessionClient.get_tracker("other-app")
    seen: list[str | None] = []
    local.on_kill(lambda: seen.append(threads.current_key()))
    wait_until(lambda: server.polls >= 1)
    server.push({"id": 1, "kind": "kill", "session_id": local.session_id, "reason": None})
    wait_until(lambda: seen)
    assert seen == [None]


# -- task() and set_status() ---------------------------------------------------------------------------------------


def test_task_marks_running_and_restores_after(agent, server):
    tracker = SessionClient.get_tracker("app")
    with tracker.task("load data"):
        assert (tracker.status, tracker.current_task) == ("running", "load data")
        assert tracker._record.task_started_at is not None
        with tracker.task("parse"):
            assert (tracker.status, tracker.current_task) == ("running", "parse")
        assert (tracker.status, tracker.current_task) == ("running", "load data")  # inner restores outer
        wait_until(lambda: last_state(server, tracker.session_id) == ("running", "load data"))
    assert (tracker.status, tracker.current_task) == ("idle", None)
    assert tracker._record.task_started_at is None
    wait_until(lambda: last_state(server, tracker.session_id) == ("idle", None))

    with pytest.raises(ZeroDivisionError), tracker.task("boom"):
        raise ZeroDivisionError
    assert (tracker.status, tracker.current_task) == ("idle", None)


async def test_async_task_marks_running_and_restores_after(agent, server):
    tracker = SessionClient.get_tracker("app")
    tracker.set_status("waiting", task="user input")
    async with tracker.task("fetch"):
        assert (tracker.status, tracker.current_task) == ("running", "fetch")
        async with tracker.task("decode"):
            await asyncio.sleep(0)
            assert tracker.current_task == "decode"
        assert tracker.current_task == "fetch"
    assert (tracker.status, tracker.current_task) == ("waiting", "user input")


def test_overlapping_tasks_show_the_one_still_running(agent):
    tracker = SessionClient.get_tracker("app")
    first, second = tracker.task("first"), tracker.task("second")
    # Two threads (the prototype's app starts one per click): the first ends while the second runs.
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert (tracker.status, tracker.current_task) == ("running", "second")
    second.__exit__(None, None, None)
    assert (tracker.status, tracker.current_task) == ("idle", None)

    # And in the other order, as nested.
    first.__enter__()
    second.__enter__()
    second.__exit__(None, None, None)
    assert (tracker.status, tracker.current_task) == ("running", "first")
    first.__exit__(None, None, None)
    assert (tracker.status, tracker.current_task) == ("idle", None)


async def test_concurrent_coroutines_tasks(agent):
    tracker = SessionClient.get_tracker("app")
    second_started, first_done = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with tracker.task("first"):
            await second_started.wait()
        first_done.set()

    async def second() -> str | None:
        async with tracker.task("second"):
            second_started.set()
            await first_done.wait()
            return tracker.current_task

    _, shown = await asyncio.gather(first(), second())
    assert shown == "second"
    assert (tracker.status, tracker.current_task) == ("idle", None)


@pytest.mark.parametrize("status", ["", "Running", "idle\n", "run ning", "1st", "x" * 33, None, 3, "émoji"], ids=repr)
def test_set_status_refuses_what_the_server_would(agent, status):
    tracker = SessionClient.get_tracker("app")
    with pytest.raises(ConfigError):
        tracker.set_status(status)
    assert (tracker.status, tracker.current_task) == ("idle", None)


def test_set_status_and_task_text_reach_the_server_acceptable(agent, server):
    tracker = SessionClient.get_tracker("app")
    tracker.set_status("custom_state-2", task="ctrl\x1b[31m\x00chars\nand tabs\t")
    assert tracker.current_task == "ctrl [31m chars and tabs "
    wait_until(lambda: last_state(server, tracker.session_id) == ("custom_state-2", "ctrl [31m chars and tabs "))

    tracker.set_status("running", task="y" * 2000)
    assert tracker.current_task == "y" * MAX_TASK
    with tracker.task("z" * 1000 + "\r"):
        assert tracker.current_task == "z" * MAX_TASK
        wait_until(lambda: last_state(server, tracker.session_id) == ("running", "z" * MAX_TASK))
    with tracker.task("bell\a"):
        assert tracker.current_task == "bell "
    tracker.set_status("idle")
    wait_until(lambda: last_state(server, tracker.session_id) == ("idle", None))
    assert not server.refused  # every sync was one the real server accepts


def test_status_calls_never_touch_the_network(agent, server):
    tracker = SessionClient.get_tracker("app")
    wait_until(lambda: agent.syncs >= 1)
    server.hold()  # a sync hangs in flight from now on
    wait_until(lambda: len(server.syncs) >= agent.syncs + 1)
    for i in range(1000):
        with tracker.task(f"t{i}"):
            tracker.set_status("running", task=f"s{i}")
    assert (tracker.status, tracker.current_task) == ("idle", None)


# -- on_kill and ending ----------------------------------------------------------------------------------------------


class Calls:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.names: list[str] = []

    def sync(self, name: str) -> Any:
        def callback() -> None:
            with self.lock:
                self.names.append(name)

        return callback

    def coro(self, name: str) -> Any:
        async def callback() -> None:
            await asyncio.sleep(0)
            with self.lock:
                self.names.append(name)

        return callback

    def raising(self, name: str) -> Any:
        def callback() -> None:
            with self.lock:
                self.names.append(name)
            raise RuntimeError(f"{name} failed")

        return callback

    def async_raising(self, name: str) -> Any:
        async def callback() -> None:
            with self.lock:
                self.names.append(name)
            raise RuntimeError(f"{name} failed")

        return callback


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == CALLBACKS_LOGGER and r.levelno >= logging.ERROR]


def test_stop_runs_every_callback_once_and_ends_the_session_closed(agent, server, caplog):
    caplog.set_level(logging.ERROR, logger=CALLBACKS_LOGGER)
    tracker = SessionClient.get_tracker("app")
    calls = Calls()
    tracker.on_kill(calls.raising("first"))
    tracker.on_kill(calls.sync("second"))
    tracker.on_kill(calls.coro("third"))
    tracker.on_kill(calls.async_raising("fourth"))
    tracker.on_kill(calls.sync("fifth"))

    tracker.stop()
    assert calls.names == ["first", "second", "third", "fourth", "fifth"]
    assert tracker.ended
    assert len(failures(caplog)) == 2
    tracker.stop()
    tracker.finish("process_exit")
    assert len(calls.names) == 5

    wait_until(lambda: server.ends_sent())
    assert [(e["session_id"], e["reason"]) for e in server.ends_sent()] == [(tracker.session_id, "closed")]
    assert tracker.session_id not in agent.sessions.handlers and tracker not in SessionClient.active()


def test_a_kill_runs_every_callback_once_and_ends_the_session_killed(agent, server, caplog):
    caplog.set_level(logging.ERROR, logger=CALLBACKS_LOGGER)
    tracker = SessionClient.get_tracker("app")
    bystander = SessionClient.get_tracker("other")
    calls, other_calls = Calls(), Calls()
    tracker.on_kill(calls.sync("sync"))
    tracker.on_kill(calls.raising("raising"))
    tracker.on_kill(calls.coro("async"))
    bystander.on_kill(other_calls.sync("bystander"))
    wait_until(lambda: server.polls >= 1 and server.sessions_sent(tracker.session_id))

    kill = {"id": 1, "kind": "kill", "session_id": tracker.session_id, "reason": "too long"}
    server.sync_commands = [kill]  # the stored intent, in every sync answer...
    server.push(kill, dict(kill, id=2))  # ...and the long-poll, twice
    wait_until(lambda: tracker.ended)
    wait_until(lambda: len(calls.names) == 3)
    assert sorted(calls.names) == ["async", "raising", "sync"]
    assert tracker.kill_reason == "too long"
    wait_until(lambda: server.ends_sent())
    assert [(e["session_id"], e["reason"]) for e in server.ends_sent()] == [(tracker.session_id, "killed")]

    syncs = len(server.syncs)
    wait_until(lambda: len(server.syncs) >= syncs + 3)  # the kill keeps coming: it must not run anything again
    assert len(calls.names) == 3 and other_calls.names == []
    assert len(failures(caplog)) == 1
    assert not bystander.ended
    fresh = SessionClient.get_tracker("app")
    assert fresh is not tracker and not fresh.ended


def test_on_kill_after_the_end_runs_at_once(agent):
    tracker = SessionClient.get_tracker("app")
    tracker.stop()
    calls = Calls()
    tracker.on_kill(calls.sync("late"))
    assert calls.names == ["late"]
    tracker.on_kill(calls.coro("late async"))
    assert calls.names == ["late", "late async"]


def test_on_kill_needs_a_callable(agent):
    tracker = SessionClient.get_tracker("app")
    with pytest.raises(ConfigError):
        tracker.on_kill("not callable")  # type: ignore[arg-type]


async def test_stop_on_a_running_event_loop_runs_async_callbacks(agent, caplog):
    # An async app, or Panel's destroy hooks, end a session from a thread whose loop is running.
    caplog.set_level(logging.ERROR, logger=CALLBACKS_LOGGER)
    tracker = SessionClient.get_tracker("app")
    calls = Calls()
    tracker.on_kill(calls.sync("sync"))
    tracker.on_kill(calls.coro("async"))
    tracker.on_kill(calls.async_raising("async raising"))
    tracker.stop()
    for _ in range(100):
        if len(calls.names) == 3:
            break
        await asyncio.sleep(0.01)
    assert sorted(calls.names) == ["async", "async raising", "sync"]
    await asyncio.sleep(0.01)
    assert len(failures(caplog)) == 1


def test_process_exit_runs_the_callbacks_then_ends_every_session_in_one_request(agent, server):
    trackers = [SessionClient.get_tracker(app) for app in ("a", "b", "c")]
    calls = Calls()
    for tracker in trackers:
        tracker.on_kill(calls.sync(tracker.app_name))
        # A callback that takes a while (closing files, a database): the agent would have flushed meanwhile.
        tracker.on_kill(lambda: threading.Event().wait(0.06))
    tracker.on_kill(calls.coro("async"))
    wait_until(lambda: all(server.sessions_sent(t.session_id) for t in trackers))
    count = len(server.syncs)

    exiting.run_exit()
    assert calls.names == ["a", "b", "c", "async"]
    assert all(t.ended for t in trackers) and SessionClient.active() == []
    at_exit = server.syncs[count:]
    assert [body for body in at_exit if body["ended"] or body["exiting"]] == [at_exit[-1]]
    assert at_exit[-1]["exiting"] is True
    ends = sorted((e["session_id"], e["reason"]) for e in at_exit[-1]["ended"])
    assert ends == sorted((t.session_id, "process_exit") for t in trackers)


def test_one_agent_thread_and_one_connection_pool_whatever_the_session_count(agent, server, sessions):
    SessionClient.get_tracker("first")
    wait_until(lambda: agent.syncs >= 1)
    threads_before = threading.active_count()
    client = agent._client
    trackers = []
    for i in range(200):
        with sessions.current(f"sess-{i}"):
            trackers.append(SessionClient.get_tracker("many"))
    for tracker in trackers:
        with tracker.task("work"):
            tracker.set_status("running", "more work")
    wait_until(lambda: len({s["session_id"] for body in server.syncs for s in body["sessions"]}) == 201)
    assert threading.active_count() == threads_before
    assert [t.name for t in threading.enumerate()].count("session-monitor-agent") == 1
    assert agent._client is client
    assert agent.session_count == 201


def test_a_kill_wins_over_an_end_reason_that_comes_after_it(agent, server):
    tracker = SessionClient.get_tracker("app")
    calls = Calls()
    tracker.on_kill(calls.sync("cleanup"))
    wait_until(lambda: server.sessions_sent(tracker.session_id))
    busy = threading.Event()

    def hold() -> None:
        busy.wait()

    run_in_background(hold)  # the callback thread is busy: the kill's own end must wait its turn

    tracker.request_kill("maintenance")
    tracker.request_kill("again")  # once only
    tracker.stop()  # ends it first, yet as killed
    busy.set()
    assert tracker.ended and calls.names == ["cleanup"] and tracker.kill_reason == "maintenance"
    wait_until(lambda: server.ends_sent())
    assert [(e["session_id"], e["reason"]) for e in server.ends_sent()] == [(tracker.session_id, "killed")]
    tracker.activate()  # too late: an ended session is never registered again
    assert tracker.session_id not in agent.sessions.records
