"""``session-monitor top`` against a real monitor server: the frame from its API rows, and the live view in a pty."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from session_monitor import top
from session_monitor.server import Settings, create_app
from tests.helpers import serve_in_thread

AGENT = "agent-top00001"


def _cost(loop_1m: float, data: int, callbacks: int) -> dict[str, Any]:
    return {
        "loop_seconds_total": loop_1m * 2,
        "loop_seconds_1m": loop_1m,
        "pool_thread_seconds": 0.0,
        "callbacks_total": callbacks,
        "slowest_callback": {"qualname": "app.[bold]on_click[/bold]", "duration_s": loop_1m},
        "periodic_callbacks": 0,
        "doc_models": 20,
        "doc_data_bytes": data,
        "threads_alive": 0,
        "pool_jobs": 0,
        "pool_cpu_seconds": None,
        "measured_at": datetime.now(UTC).isoformat(),
    }


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'top.sqlite3'}", run_reaper=False))
    with serve_in_thread(app) as url:
        now = datetime.now(UTC).isoformat()
        sessions = [
            ("blocker", _cost(2.0, 1_000, 5)),
            ("holder", _cost(0.01, 200_000_000, 9)),
            ("chatty", _cost(0.05, 10_000, 500)),
        ]
        body = {
            "agent": {"host": "web-1", "pid": 7, "started_at": now},
            "full": True,
            "sessions": [
                {"session_id": sid, "app_name": "app [red]x[/red]", "started_at": now, "cost": cost}
                for sid, cost in sessions
            ],
        }
        assert httpx.post(f"{url}/agents/{AGENT}/sync", json=body).status_code == 200
        yield url


def _order(text: str) -> list[str]:
    return [sid for _, sid in sorted((text.index(sid), sid) for sid in ("blocker", "holder", "chatty"))]


def test_the_frame_sorts_real_rows_by_each_key_and_shows_client_text_as_typed(server: str) -> None:
    rows, leftovers = top.api_fetch(server, None)()
    assert leftovers == 0 and len(rows) == 3
    console = Console(width=220, record=True, color_system=None)
    expected = {"l": ["blocker", "chatty", "holder"], "m": ["holder", "chatty", "blocker"]}
    expected["c"] = ["chatty", "holder", "blocker"]
    for key, order in expected.items():
        console.print(top.render(rows, key))
        text = console.export_text()
        assert _order(text) == order, (key, text)
        assert f"sorted by {top.SORTS[key].label}" in text
    console.print(top.render(rows, "m"))
    text = console.export_text()
    assert "200.0 MB" in text and "2.00 s" in text
    assert "app [red]x[/red]" in text  # markup in client text is shown, not applied
    assert "[bold]on_click[/bold] 2.00 s" in text


def test_top_fetch_fails_clearly_when_the_server_is_down() -> None:
    with pytest.raises(top.FetchError, match="cannot reach the session monitor"):
        top.api_fetch("http://127.0.0.1:9", None, timeout_s=1.0)()


def _read_until(fd: int, needle: str, seen: list[str], timeout_s: float = 20.0, *, then: tuple[str, ...] = ()) -> str:
    """Read the terminal until ``needle`` shows, followed by every one of ``then`` (a frame can arrive in pieces)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen.append(os.read(fd, 65536).decode(errors="replace"))
            except OSError:
                break
            text = "".join(seen)
            if needle in text and all(part in text[text.index(needle) :] for part in then):
                return text
    raise AssertionError(f"{needle!r} not shown within {timeout_s} s; output: {''.join(seen)[-2000:]!r}")


def test_top_in_a_terminal_redraws_resorts_on_a_key_and_quits(server: str) -> None:
    leader, follower = pty.openpty()
    env = {**os.environ, "SESSION_MONITOR_URL": server, "COLUMNS": "220", "LINES": "40", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "session_monitor", "top", "--interval-s", "0.5"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    try:
        seen: list[str] = []
        _read_until(leader, "sorted by loop time (1 min)", seen)
        first = len("".join(seen))
        os.write(leader, b"m")
        text = _read_until(leader, "sorted by document data", seen, then=("holder", "blocker"))
        after = text[first:]
        frame = after[after.index("sorted by document data") :]
        assert frame.index("holder") < frame.index("blocker"), frame
        os.write(leader, b"q")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
