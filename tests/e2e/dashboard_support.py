"""Fixtures of the dashboard tests: a real API server, ``session-monitor dashboard`` as a child process, Chromium.

Sessions are registered the way real clients do it: the agent protocol (``POST /agents/{id}/sync``, what every
tracked Panel process sends) and the prototype's ``POST /sessions``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Page
from tests.helpers import free_port, serve_in_thread, wait_until

from session_monitor.server import Settings, create_app

ADMIN_TOKEN = "dashboard-admin-token-0123456789"
PASSWORD = "operator-password-e2e"
DASHBOARD_START_TIMEOUT_S = 60.0


@dataclass
class Api:
    """The monitor's REST API in a thread of the test process (a real uvicorn server on SQLite)."""

    url: str
    token: str | None = None
    agent_id: str = field(default_factory=lambda: f"e2e-agent-{uuid.uuid4().hex[:12]}")
    tracked: dict[str, dict[str, Any]] = field(default_factory=dict)

    def http(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)

    def register(self, app: str, user: str | None = None, host: str | None = None) -> str:
        """The prototype's registration (``POST /sessions``)."""
        with self.http() as c:
            body = {"app_name": app, "user_id": user, "host": host, "pid": 4242 if host else None}
            response = c.post("/sessions", json=body)
            response.raise_for_status()
            return str(response.json()["session_id"])

    def set_status(self, session_id: str, status: str, task: str | None) -> None:
        with self.http() as c:
            c.put(f"/sessions/{session_id}/status", json={"status": status, "current_task": task}).raise_for_status()

    def sync(self, sessions: list[dict[str, Any]], *, host: str = "e2e-host", command: str = "panel serve") -> None:
        """What a tracked Panel process's agent sends: its sessions, batched, as one sync."""
        now = datetime.now(UTC).isoformat()
        for s in sessions:
            self.tracked[s["session_id"]] = {"status": "idle", "started_at": now, **s}
        body = {
            "agent": {"host": host, "pid": os.getpid(), "command": command, "started_at": now},
            "sessions": list(self.tracked.values()),
        }
        with self.http() as c:
            c.post(f"/agents/{self.agent_id}/sync", json=body).raise_for_status()

    def session(self, session_id: str) -> dict[str, Any]:
        with self.http() as c:
            response = c.get(f"/sessions/{session_id}")
            response.raise_for_status()
            return dict(response.json())

    def audit(self) -> list[dict[str, Any]]:
        with self.http() as c:
            response = c.get("/audit")
            response.raise_for_status()
            return list(response.json()["entries"])


class Dashboard:
    """``session-monitor dashboard`` as a child process, stopped by its own PID."""

    def __init__(self, api_url: str, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_MONITOR_")}
        command = [sys.executable, "-m", "session_monitor", "dashboard", "--api-url", api_url]
        command += ["--port", str(self.port)]
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(command, env={**clean, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> Dashboard:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited with {self.proc.returncode}: {self.log()}")
            try:
                return httpx.get(f"{self.url}/login", timeout=1.0).status_code < 500
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout_s=DASHBOARD_START_TIMEOUT_S, interval_s=0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def running_api(tmp: Path, token: str | None) -> Generator[Api, None, None]:
    """An API server in a thread on a fresh SQLite database (with ``token`` as its admin token)."""
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'monitor.sqlite3'}",
        run_reaper=False,
        admin_token=token,
        client_token=None,
    )
    with serve_in_thread(create_app(settings)) as url:
        yield Api(url, token)


@dataclass
class Watched:
    """A page and every dialog that tried to open in it (a dialog would mean script from client text ran)."""

    page: Page
    dialogs: list[str]
    frames: list[str]


def watch(page: Page) -> Watched:
    """Record the page's dialogs (dismissed) and the text of every websocket frame it receives."""
    watched = Watched(page, [], [])

    def on_dialog(dialog: Any) -> None:
        watched.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def on_websocket(ws: Any) -> None:
        ws.on("framereceived", lambda data: watched.frames.append(data if isinstance(data, str) else repr(data)))

    page.on("dialog", on_dialog)
    page.on("websocket", on_websocket)
    return watched


TAB_SHOWN_JS = """(title) => {
  for (const doc of Bokeh.documents) {
    for (const m of doc._all_models.values()) {
      if (!Array.isArray(m.tabs) || typeof m.active !== 'number') continue;
      if (!m.tabs.some((t) => t.title === title)) continue;
      const shown = m.tabs[m.active];
      const pending = (shown.child.children || []).some((c) => (c.css_classes || []).includes('sm-tab-pending'));
      return shown.title === title && !pending;
    }
  }
  return false;
}"""
"""The dashboard's tab ``title`` is the one shown and holds its content, not the placeholder of a tab not built
(``session_monitor.dashboard.tabs.PENDING_CLASS``)."""


def show_tab(page: Page, title: str, timeout_ms: float = 10_000) -> None:
    """Open a tab of the dashboard and wait for its content: tabs are built on the server when first opened."""
    page.get_by_text(title, exact=True).first.click()
    page.wait_for_function(TAB_SHOWN_JS, arg=title, timeout=timeout_ms)
