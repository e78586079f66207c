"""The prototype's own client and dashboard calls, unchanged, against a real server on both databases.

Each call below is written the way ``session_client.py`` and ``monitor.py``
make it: a synchronous ``httpx.Client``, the same paths, bodies (or none) and
the same fields read from the answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from session_monitor.server import create_app
from tests.conftest import DatabaseTarget, FakeClock
from tests.helpers import PROTOTYPE_ROW_FIELDS, serve_in_thread


@pytest.fixture
def server_url(db_target: DatabaseTarget) -> Iterator[str]:
    with serve_in_thread(create_app(db_target.settings())) as url:
        yield url


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


# -- the prototype's session_client.py ----------------------------------------------------------------


def client_register(http: httpx.Client, url: str, app_name: str, user_id: str | None = None) -> str:
    response = http.post(f"{url}/sessions", json={"app_name": app_name, "user_id": user_id})
    response.raise_for_status()
    session_id: str = response.json()["session_id"]
    return session_id


def client_heartbeat(http: httpx.Client, url: str, session_id: str) -> bool:
    response = http.post(f"{url}/sessions/{session_id}/heartbeat")
    response.raise_for_status()
    data = response.json()
    return bool(data.get("kill_requested"))


def client_task_start(http: httpx.Client, url: str, session_id: str, name: str) -> httpx.Response:
    return http.put(f"{url}/sessions/{session_id}/status", json={"status": "running", "current_task": name})


def client_task_end(http: httpx.Client, url: str, session_id: str) -> httpx.Response:
    return http.put(f"{url}/sessions/{session_id}/status", json={"status": "idle", "current_task": None})


def client_stop(http: httpx.Client, url: str, session_id: str) -> httpx.Response:
    return http.delete(f"{url}/sessions/{session_id}")


# -- the prototype's monitor.py -----------------------------------------------------------------------


def monitor_sessions(http: httpx.Client, url: str) -> list[dict[str, Any]]:
    response = http.get(f"{url}/sessions")
    response.raise_for_status()
    sessions: list[dict[str, Any]] = response.json()["sessions"]
    return sessions


def monitor_by_id(http: httpx.Client, url: str) -> dict[str, dict[str, Any]]:
    return {row["session_id"]: row for row in monitor_sessions(http, url)}


def monitor_cleanup(http: httpx.Client, url: str) -> int:
    response = http.delete(f"{url}/sessions/stale?older_than_minutes=10")
    response.raise_for_status()
    return int(response.json()["deleted_count"])


def monitor_kill(http: httpx.Client, url: str, session_id: str) -> dict[str, Any]:
    response = http.post(f"{url}/sessions/{session_id}/kill")
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def monitor_kill_all(http: httpx.Client, url: str, app_name: str) -> int:
    response = http.post(f"{url}/apps/{app_name}/kill-all")
    response.raise_for_status()
    return int(response.json()["killed_count"])


# -- tests --------------------------------------------------------------------------------------------


def test_prototype_lifecycle(server_url: str, http: httpx.Client) -> None:
    url = server_url
    anonymous = client_register(http, url, "task_runner", None)
    alice = client_register(http, url, "task_runner", "alice")
    pooled = client_register(http, url, "pool_app", None)
    assert len({anonymous, alice, pooled}) == 3

    rows = monitor_by_id(http, url)
    assert set(rows) == {anonymous, alice, pooled}
    for row in rows.values():
        assert row.keys() >= PROTOTYPE_ROW_FIELDS
        assert row["status"] == "idle" and row["current_task"] is None
        assert row["is_stale"] is False and row["kill_requested"] is False
        assert isinstance(row["duration_seconds"], float) and 0 <= row["duration_seconds"] < 60
        start, beat = datetime.fromisoformat(row["start_time"]), datetime.fromisoformat(row["last_heartbeat"])
        assert start.tzinfo is not None and beat >= start
    assert (rows[anonymous]["app_name"], rows[anonymous]["user_id"]) == ("task_runner", None)
    assert (rows[alice]["app_name"], rows[alice]["user_id"]) == ("task_runner", "alice")

    # heartbeat loop: nothing to do yet
    assert client_heartbeat(http, url, alice) is False

    # with tracker.task("Generating Report"): ...
    response = client_task_start(http, url, alice, "Generating Report")
    assert response.status_code == 200 and response.json() == {"status": "updated"}
    row = monitor_by_id(http, url)[alice]
    assert (row["status"], row["current_task"]) == ("running", "Generating Report")
    response = client_task_end(http, url, alice)
    assert response.status_code == 200 and response.json() == {"status": "updated"}
    row = monitor_by_id(http, url)[alice]
    assert (row["status"], row["current_task"]) == ("idle", None)

    # the operator presses Kill on alice's row; her next heartbeat sees it
    assert monitor_kill(http, url, alice) == {"status": "kill_requested"}
    assert monitor_by_id(http, url)[alice]["kill_requested"] is True
    assert client_heartbeat(http, url, alice) is True
    assert client_heartbeat(http, url, anonymous) is False

    # the tracker stops itself (on_kill ran): the session leaves the list
    response = client_stop(http, url, alice)
    assert response.status_code == 200 and response.json() == {"status": "deleted"}
    assert set(monitor_by_id(http, url)) == {anonymous, pooled}

    # Kill All (App) hits only that app's sessions
    assert monitor_kill_all(http, url, "task_runner") == 1
    assert client_heartbeat(http, url, anonymous) is True
    assert client_heartbeat(http, url, pooled) is False
    assert monitor_by_id(http, url)[pooled]["kill_requested"] is False

    # the dashboard's periodic cleanup: everybody is fresh
    assert monitor_cleanup(http, url) == 0

    assert client_stop(http, url, anonymous).json() == {"status": "deleted"}
    assert client_stop(http, url, pooled).json() == {"status": "deleted"}
    assert monitor_sessions(http, url) == []


def test_unknown_ids_are_404(server_url: str, http: httpx.Client) -> None:
    url, unknown = server_url, "00000000-0000-0000-0000-000000000000"
    assert client_stop(http, url, unknown).status_code == 404
    assert http.post(f"{url}/sessions/{unknown}/heartbeat").status_code == 404
    assert client_task_start(http, url, unknown, "x").status_code == 404
    assert http.post(f"{url}/sessions/{unknown}/kill").status_code == 404
    with pytest.raises(httpx.HTTPStatusError) as info:
        client_heartbeat(http, url, unknown)
    assert info.value.response.status_code == 404

    # a session the client already stopped is gone for every call too
    session_id = client_register(http, url, "task_runner")
    assert client_stop(http, url, session_id).status_code == 200
    assert client_stop(http, url, session_id).status_code == 404
    assert http.post(f"{url}/sessions/{session_id}/heartbeat").status_code == 404
    assert client_task_end(http, url, session_id).status_code == 404
    assert http.post(f"{url}/sessions/{session_id}/kill").status_code == 404


def test_kill_all_with_unquoted_app_name(server_url: str, http: httpx.Client) -> None:
    # monitor.py puts the name into the path as it is; httpx percent-encodes the space
    url = server_url
    ids = [client_register(http, url, "my app"), client_register(http, url, "my app")]
    other = client_register(http, url, "my")
    assert monitor_kill_all(http, url, "my app") == 2
    assert [client_heartbeat(http, url, i) for i in ids] == [True, True]
    assert client_heartbeat(http, url, other) is False
    assert monitor_kill_all(http, url, "nobody") == 0


def test_dashboard_cleanup_of_silent_sessions(db_target: DatabaseTarget, clock: FakeClock, http: httpx.Client) -> None:
    with serve_in_thread(create_app(db_target.settings(), clock=clock)) as url:
        silent = client_register(http, url, "task_runner")
        beating = client_register(http, url, "task_runner")
        clock.advance(minutes=3)
        row = monitor_by_id(http, url)[silent]
        assert row["is_stale"] is True and row["duration_seconds"] == 180.0
        clock.advance(minutes=6)
        assert client_heartbeat(http, url, beating) is False
        clock.advance(minutes=2)  # silent: 11 min, beating: 2 min

        assert monitor_cleanup(http, url) == 1
        assert list(monitor_by_id(http, url)) == [beating]
        assert http.post(f"{url}/sessions/{silent}/heartbeat").status_code == 404
        assert monitor_cleanup(http, url) == 0
