"""``session-monitor`` driven through click's runner against a real server in a thread."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from session_monitor import __version__, defaults
from session_monitor.cli import main
from session_monitor.server import Settings, create_app
from tests.helpers import free_port, serve_in_thread

ADMIN_TOKEN = "admin-token-0123456789abcdef"
ODD_APP = "team/reports one?mode=full#top"
"""An app name with every character that must be escaped in a URL path."""


def cli_env(**values: str) -> dict[str, str | None]:
    """The CLI's environment: every outer SESSION_MONITOR_* removed, then ``values``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SESSION_MONITOR_")}
    env.update(values)
    return env


def run(args: list[str], **env: str) -> Result:
    return CliRunner().invoke(main, args, env=cli_env(**env))


class ShiftableClock:
    """Real time plus an offset, so a test can make sessions silent without sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``main`` configures logging onto the runner's stderr; give the next tests theirs back."""
    names = ["session_monitor", "uvicorn", "uvicorn.access", "uvicorn.error"]
    saved = {n: (lg.handlers[:], lg.level, lg.propagate) for n in names for lg in [logging.getLogger(n)]}
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@contextlib.contextmanager
def running_server(tmp_path: Path, clock: ShiftableClock | None = None, **overrides: Any) -> Iterator[str]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'monitor.sqlite3'}", run_reaper=False, **overrides)
    with serve_in_thread(create_app(settings, clock=clock or ShiftableClock())) as url:
        yield url


@pytest.fixture
def clock() -> ShiftableClock:
    return ShiftableClock()


@pytest.fixture
def server(tmp_path: Path, clock: ShiftableClock) -> Iterator[str]:
    with running_server(tmp_path, clock) as url:
        yield url


def register(url: str, app_name: str, **fields: Any) -> str:
    response = httpx.post(f"{url}/sessions", json={"app_name": app_name, **fields})
    assert response.status_code == 200, response.text
    return str(response.json()["session_id"])


def set_status(url: str, session_id: str, status: str, task: str | None = None) -> None:
    response = httpx.put(f"{url}/sessions/{session_id}/status", json={"status": status, "current_task": task})
    assert response.status_code == 200, response.text


def session(url: str, session_id: str, token: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url}/sessions/{session_id}", headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def lines_of(result: Result) -> list[str]:
    return result.output.splitlines()


# --- ls ---------------------------------------------------------------------------------------------------------


def test_ls_prints_a_readable_table_and_a_count(server: str) -> None:
    busy = register(server, "reports", user_id="alice", host="web-1", pid=4242)
    set_status(server, busy, "running", "Generating report")
    register(server, "pool", user_id="bob", host="web-2", pid=77)

    result = run(["ls"], SESSION_MONITOR_URL=server)

    assert result.exit_code == 0, result.output
    header, *rows, count = lines_of(result)
    for column in ("APP", "USER", "HOST:PID", "STATE", "TASK"):
        assert column in header
    assert count == "2 live session(s)"
    assert len(rows) == 2
    (row,) = [r for r in rows if "reports" in r]
    for value in ("alice", "web-1:4242", "running", "Generating report"):
        assert value in row
    assert row.startswith(busy[:12])
    # Columns line up: each value starts under its header.
    assert row.index("web-1:4242") == header.index("HOST:PID")
    assert row.index("running") == header.index("STATE")
    assert row.index("Generating report") == header.index("TASK")
    (other,) = [r for r in rows if "pool" in r]
    assert "web-2:77" in other and "idle" in other


def test_ls_with_no_sessions(server: str) -> None:
    result = run(["ls"], SESSION_MONITOR_URL=server)
    assert result.exit_code == 0, result.output
    assert lines_of(result)[-1] == "0 live session(s)"
    assert "APP" in lines_of(result)[0]


def test_ls_json_prints_the_servers_json(server: str) -> None:
    first = register(server, "reports", user_id="alice")
    second = register(server, "pool")

    result = run(["ls", "--json"], SESSION_MONITOR_URL=server)

    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    direct = httpx.get(f"{server}/sessions").json()
    assert printed["total"] == direct["total"] == 2
    assert {s["session_id"] for s in printed["sessions"]} == {first, second}
    moving = {"duration_seconds", "task_seconds"}
    strip = [{k: v for k, v in s.items() if k not in moving} for s in direct["sessions"]]
    assert [{k: v for k, v in s.items() if k not in moving} for s in printed["sessions"]] == strip


def test_ls_filters_by_app_and_by_status(server: str) -> None:
    running = register(server, "reports")
    set_status(server, running, "running", "crunching")
    idle = register(server, "reports")
    other = register(server, ODD_APP)

    by_app = run(["ls", "--json", "--app", ODD_APP], SESSION_MONITOR_URL=server)
    assert by_app.exit_code == 0, by_app.output
    assert [s["session_id"] for s in json.loads(by_app.output)["sessions"]] == [other]

    by_status = run(["ls", "--status", "running"], SESSION_MONITOR_URL=server)
    assert by_status.exit_code == 0, by_status.output
    assert running[:12] in by_status.output
    assert idle[:12] not in by_status.output and other[:12] not in by_status.output
    assert lines_of(by_status)[-1] == "1 live session(s)"

    both = run(["ls", "--app", "reports", "--status", "idle"], SESSION_MONITOR_URL=server)
    assert both.exit_code == 0, both.output
    assert idle[:12] in both.output and running[:12] not in both.output
    assert lines_of(both)[-1] == "1 live session(s)"


def test_ls_rejects_an_unknown_status_before_calling(server: str) -> None:
    result = run(["ls", "--status", "sleeping"], SESSION_MONITOR_URL=server)
    assert result.exit_code == 2
    assert "sleeping" in result.output


def test_terminal_escapes_are_refused_on_registration(server: str) -> None:
    for fields in ({"app_name": "\x1b[31mred"}, {"app_name": "ok", "user_id": "x\x1b]0;pwned\x07"}):
        response = httpx.post(f"{server}/sessions", json=fields)
        assert response.status_code == 422, response.text
        assert "\x1b" not in response.text
    assert httpx.get(f"{server}/sessions").json()["total"] == 0


def test_ls_never_prints_client_text_raw(server: str, tmp_path: Path) -> None:
    # Format characters pass the server's check (they are not control characters) but are not printable.
    bidi = register(server, "re\u202eports", user_id="mallory")
    # Escape sequences can still sit in a database written by something else (an older version, a manual fix).
    planted = register(server, "planted")
    with contextlib.closing(sqlite3.connect(tmp_path / "monitor.sqlite3")) as conn, conn:
        conn.execute(
            "UPDATE sessions SET app_name = ?, user_id = ?, host = ?, current_task = ? WHERE session_id = ?",
            ("\x1b[31mred", "\x1b]0;title\x07", "h\x9bost", "\x1b[2Jwipe", planted),
        )

    result = run(["ls"], SESSION_MONITOR_URL=server)

    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output and "\x9b" not in result.output
    assert "\u202e" not in result.output
    assert all(ch.isprintable() for line in lines_of(result) for ch in line)
    assert "?[31mred" in result.output and "?[2Jwipe" in result.output
    assert "re?ports" in result.output
    assert bidi[:12] in result.output and planted[:12] in result.output


# --- kill, kill-all, cleanup ---------------------------------------------------------------------------------------


def test_kill_requests_a_kill_and_reports(server: str) -> None:
    target = register(server, "reports")
    bystander = register(server, "reports")

    result = run(["kill", target, "--reason", "maintenance"], SESSION_MONITOR_URL=server)

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"kill requested for session {target}"
    killed = session(server, target)
    assert killed["kill_requested"] is True
    assert killed["kill_reason"] == "maintenance"
    assert session(server, bystander)["kill_requested"] is False


def test_kill_of_an_unknown_session_fails_with_the_servers_message(server: str) -> None:
    result = run(["kill", "no-such-session"], SESSION_MONITOR_URL=server)
    assert result.exit_code == 1
    assert "404" in result.output
    assert "session 'no-such-session' not found" in result.output
    assert "kill requested" not in result.output


def test_kill_all_escapes_the_app_name_and_reports(server: str) -> None:
    odd = [register(server, ODD_APP) for _ in range(2)]
    # Names a badly escaped path would hit instead.
    others = [register(server, name) for name in ("team", "team/reports one", "reports")]

    result = run(["kill-all", ODD_APP], SESSION_MONITOR_URL=server)

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"kill requested for 2 session(s) of {ODD_APP}"
    assert all(session(server, sid)["kill_requested"] for sid in odd)
    assert not any(session(server, sid)["kill_requested"] for sid in others)


def test_kill_all_of_an_app_without_sessions_reports_zero(server: str) -> None:
    register(server, "reports")
    result = run(["kill-all", "nothing-here"], SESSION_MONITOR_URL=server)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "kill requested for 0 session(s) of nothing-here"


def test_cleanup_reports_how_many_silent_sessions_it_ended(server: str, clock: ShiftableClock) -> None:
    silent = register(server, "reports")
    clock.offset = timedelta(minutes=2)
    alive = register(server, "reports")

    result = run(["cleanup", "--older-than-minutes", "1"], SESSION_MONITOR_URL=server)

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "ended 1 silent session(s)"
    assert session(server, silent)["end_reason"] == "expired"
    assert session(server, alive)["ended_at"] is None

    again = run(["cleanup", "--older-than-minutes", "1"], SESSION_MONITOR_URL=server)
    assert again.exit_code == 0, again.output
    assert again.output.strip() == "ended 0 silent session(s)"


def test_cleanup_refuses_a_zero_age(server: str) -> None:
    result = run(["cleanup", "--older-than-minutes", "0"], SESSION_MONITOR_URL=server)
    assert result.exit_code == 2
    assert "older-than-minutes" in result.output


# --- failures: server down, hanging, refusing ------------------------------------------------------------------


@pytest.mark.parametrize("args", [["ls"], ["kill", "abc"], ["kill-all", "reports"], ["cleanup"]])
def test_server_down_exits_1_naming_the_url(args: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run(args, SESSION_MONITOR_URL=url)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"cannot reach the session monitor at {url}" in result.output
    assert "Traceback" not in result.output


def test_url_flag_wins_over_the_environment(server: str) -> None:
    register(server, "reports")
    nowhere = f"http://127.0.0.1:{free_port()}"
    result = run(["ls", "--url", server], SESSION_MONITOR_URL=nowhere)
    assert result.exit_code == 0, result.output
    assert lines_of(result)[-1] == "1 live session(s)"


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """Accepts TCP connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)
    stop = threading.Event()
    held: list[socket.socket] = []
    accepted = threading.Event()

    def hold() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)
            accepted.set()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        assert accepted.is_set(), "the CLI never connected"
    finally:
        stop.set()
        thread.join(timeout=10)
        for conn in held:
            conn.close()
        listener.close()


def test_a_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "HTTP_TIMEOUT_S", 0.5)
    with silent_server() as url:
        result = run(["ls"], SESSION_MONITOR_URL=url)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert f"the server at {url} did not answer within 0.5 s" in result.output
    assert "Traceback" not in result.output


def test_admin_token_is_needed_and_read_from_the_environment(tmp_path: Path) -> None:
    with running_server(tmp_path, admin_token=ADMIN_TOKEN) as url:
        target = register(url, "reports")

        refused = run(["kill", target], SESSION_MONITOR_URL=url)
        assert refused.exit_code == 1, refused.output
        assert "401" in refused.output
        assert "SESSION_MONITOR_ADMIN_TOKEN" in refused.output
        assert session(url, target, ADMIN_TOKEN)["kill_requested"] is False

        wrong = run(["kill", target], SESSION_MONITOR_URL=url, SESSION_MONITOR_ADMIN_TOKEN="x" * 32)
        assert wrong.exit_code == 1, wrong.output
        assert "SESSION_MONITOR_ADMIN_TOKEN" in wrong.output

        accepted = run(["kill", target], SESSION_MONITOR_URL=url, SESSION_MONITOR_ADMIN_TOKEN=ADMIN_TOKEN)
        assert accepted.exit_code == 0, accepted.output
        assert accepted.output.strip() == f"kill requested for session {target}"
        assert session(url, target, ADMIN_TOKEN)["kill_requested"] is True
        assert ADMIN_TOKEN not in accepted.output

        by_flag = run(["kill-all", "reports", "--admin-token", ADMIN_TOKEN], SESSION_MONITOR_URL=url)
        assert by_flag.exit_code == 0, by_flag.output
        assert "kill requested for 1 session(s) of reports" in by_flag.output


def test_ls_reads_with_the_admin_token_when_one_is_set(tmp_path: Path) -> None:
    with running_server(tmp_path, admin_token=ADMIN_TOKEN) as url:
        register(url, "reports", user_id="alice")
        refused = run(["ls"], SESSION_MONITOR_URL=url)
        assert refused.exit_code == 1, refused.output
        assert "401" in refused.output and "SESSION_MONITOR_ADMIN_TOKEN" in refused.output
        listed = run(["ls"], SESSION_MONITOR_URL=url, SESSION_MONITOR_ADMIN_TOKEN=ADMIN_TOKEN)
        assert listed.exit_code == 0, listed.output
        assert "reports" in listed.output and "alice" in listed.output


# --- serve, version ------------------------------------------------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``serve`` resolves its default database under the working directory: keep it in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        ("mysql://root:hunter2@db.example/monitor", "unsupported database 'mysql'"),
        ("not a database url", "invalid database URL"),
        ("postgresql://monitor:hunter2@db.example:fivefourthreetwo/monitor", "invalid database URL"),
    ],
)
def test_serve_with_an_invalid_database_url_fails_clearly(in_tmp: Path, database_url: str, expected: str) -> None:
    port = str(free_port())
    by_flag = run(["serve", "--port", port, "--database-url", database_url])
    by_env = run(["serve", "--port", port], SESSION_MONITOR_DATABASE_URL=database_url)
    for result in (by_flag, by_env):
        assert result.exit_code == 2, result.output
        assert isinstance(result.exception, SystemExit)
        errors = [line for line in lines_of(result) if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], result.output
        assert "sqlite:///" in errors[0]
        assert "Traceback" not in result.output
        assert "hunter2" not in result.output


def test_serve_refuses_a_public_bind_without_a_token(in_tmp: Path) -> None:
    port = str(free_port())
    for result in (run(["serve", "--host", "0.0.0.0", "--port", port]), run(["serve"], SESSION_MONITOR_HOST="0.0.0.0")):
        assert result.exit_code == 2, result.output
        assert "refusing to listen on 0.0.0.0" in result.output
        assert "SESSION_MONITOR_ADMIN_TOKEN" in result.output
    assert not (in_tmp / "data").exists()


def test_every_serve_flag_has_an_environment_twin(in_tmp: Path) -> None:
    # INSECURE from the environment lets 0.0.0.0 (from the environment) pass the bind check; the bad
    # DATABASE_URL from the environment then stops serve before anything listens.
    result = run(
        ["serve"],
        SESSION_MONITOR_HOST="0.0.0.0",
        SESSION_MONITOR_INSECURE="1",
        SESSION_MONITOR_PORT=str(free_port()),
        SESSION_MONITOR_DATABASE_URL="mysql://monitor@db.example/monitor",
    )
    assert result.exit_code == 2, result.output
    assert "refusing" not in result.output
    assert "unsupported database 'mysql'" in result.output

    port = run(["serve"], SESSION_MONITOR_PORT="not-a-port")
    assert port.exit_code == 2
    assert "--port" in port.output and "not-a-port" in port.output

    out_of_range = run(["serve"], SESSION_MONITOR_PORT="70000")
    assert out_of_range.exit_code == 2
    assert "invalid setting: SESSION_MONITOR_PORT" in out_of_range.output


def test_version() -> None:
    result = run(["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"session-monitor, version {__version__}"
