"""Two single-process ``panel serve --setup`` behind a real HAProxy, drained and undrained; SIGTERM's notice.

The recipe of ``session-monitor lb-config haproxy`` as printed (sticky cookie, least connections, the agents'
readiness through HAProxy's agent-check), with a stats socket added so the test can see HAProxy's view of each
server. Each tab is its own browser context (its own cookie jar: its own user), in one shared Chromium.
HAProxy runs on free loopback ports and is ended by its PID.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect
from tests.helpers import free_port, wait_until

from session_monitor.cli.lb_config import Backend, haproxy_config

if TYPE_CHECKING:  # pytest imports the conftest under its own name: only its types are borrowed here
    from tests.e2e.conftest import Monitor, PanelServer

pytestmark = pytest.mark.e2e
expect.set_options(timeout=15_000)  # a loaded CI machine
logger = logging.getLogger(__name__)

HAPROXY = os.environ.get("SESSION_MONITOR_HAPROXY", "/usr/sbin/haproxy")
ROOT = Path(__file__).resolve().parents[2]
SETUP = str(ROOT / "src" / "session_monitor" / "client" / "setup_hook.py")
DEADLINE_S = 20
MESSAGE = "Deploy of <b>v2</b> now"
SESSION_TEXT = re.compile(r"session (\S+)")


@dataclass
class Tab:
    context: BrowserContext
    page: Page
    session_id: str


class HAProxy:
    """``haproxy -db`` with the printed configuration (plus a stats socket) on ``port``."""

    def __init__(self, backends: list[Backend], folder: Path, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.socket_path = folder / "haproxy.sock"
        config = haproxy_config(backends, bind=f"127.0.0.1:{port}")
        config = config.replace("global\n", f"global\n    stats socket {self.socket_path} mode 600 level user\n", 1)
        (folder / "haproxy.cfg").write_text(config)
        self.log_path = folder / "haproxy.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(folder / "haproxy.cfg")], stdout=log, stderr=subprocess.STDOUT
            )

    def states(self) -> dict[str, str]:
        """HAProxy's status of each server (``UP``, ``DRAIN``, ``DOWN``...), by server name."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(self.socket_path))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == "panel_servers" and r["svname"] != "BACKEND"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


@dataclass
class Farm:
    lb: HAProxy
    panels: list[PanelServer]
    ready_ports: list[int]


@pytest.fixture(scope="module")
def farm(module_panel_server: Callable[..., PanelServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    if not Path(HAPROXY).exists():  # a failure, never a skip: CI installs HAProxy
        pytest.fail(f"HAProxy is required for this test and was not found at {HAPROXY}")
    folder = tmp_path_factory.mktemp("haproxy")
    lb_port = free_port()
    ready_ports = [free_port(), free_port()]
    panels = [
        module_panel_server(
            "plain.py",
            args=("--allow-websocket-origin", f"127.0.0.1:{lb_port}", "--setup", SETUP),
            env={"SESSION_MONITOR_READY_PORT": str(port)},
        )
        for port in ready_ports
    ]
    for panel in panels:
        panel.wait_ready()
    backends = [Backend("127.0.0.1", p.port, r) for p, r in zip(panels, ready_ports, strict=True)]
    lb = HAProxy(backends, folder, lb_port)
    try:
        wait_until(lambda: lb.socket_path.exists(), timeout_s=10)
        wait_until(lambda: set(lb.states().values()) == {"UP"}, timeout_s=20, interval_s=0.1)
        yield Farm(lb, panels, ready_ports)
    finally:
        lb.stop()


def open_tab(browser: Browser, url: str) -> Tab:
    """A new user (its own cookies) opens the app through the load balancer; returns once its session is live."""
    context = browser.new_context(viewport={"width": 900, "height": 400})
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(f"{url}/plain")
    label = page.get_by_text(SESSION_TEXT)
    expect(label).to_be_visible()
    match = SESSION_TEXT.search(label.inner_text())
    assert match is not None
    return Tab(context, page, match.group(1))


def banners(page: Page) -> Any:
    """The banners of the page (in the banner component's shadow root: Playwright's CSS pierces it)."""
    return page.locator(".sm-banners .banner")


def pid_of(monitor: Monitor, tab: Tab) -> int:
    return int(wait_until(lambda: monitor.session(tab.session_id).get("pid"), timeout_s=10))


def cli(*args: str, monitor: Monitor) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "session_monitor", *args, "--url", monitor.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def ready_status(port: int) -> int:
    return httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code


@pytest.mark.timeout(240)
def test_drain_behind_haproxy(farm: Farm, monitor: Monitor, browser: Browser) -> None:
    tabs: list[Tab] = []
    try:
        _drain_and_undrain(farm, monitor, browser, tabs)
    finally:
        for tab in tabs:
            with contextlib.suppress(Exception):
                tab.context.close()


def _drain_and_undrain(farm: Farm, monitor: Monitor, browser: Browser, tabs: list[Tab]) -> None:
    first, second = farm.panels
    tabs += [open_tab(browser, farm.lb.url) for _ in range(8)]
    # Exactly the 8 sessions of the 8 tabs, no copy made by a page and its websocket landing apart.
    wait_until(lambda: len(monitor.sessions(app="plain")) == 8, timeout_s=15)
    listed = monitor.sessions(app="plain")
    assert {s["session_id"] for s in listed} == {t.session_id for t in tabs}
    placed = {t.session_id: pid_of(monitor, t) for t in tabs}
    assert set(placed.values()) == {first.pid, second.pid}, placed
    logger.info("8 tabs: %d on the first process, %d on the second", *(
        sum(pid == p.pid for pid in placed.values()) for p in (first, second)))  # fmt: skip
    assert all(ready_status(port) == 200 for port in farm.ready_ports)

    host = socket.gethostname()
    drained_at = time.monotonic()
    out = cli("drain", f"{host}:{first.pid}", "--deadline", f"{DEADLINE_S}s", "--message", MESSAGE, monitor=monitor)
    assert f"drained {host}:{first.pid} until" in out
    wait_until(lambda: ready_status(farm.ready_ports[0]) == 503, timeout_s=10)
    unready_s = time.monotonic() - drained_at
    wait_until(lambda: farm.lb.states().get("panel1", "").startswith("DRAIN"), timeout_s=10, interval_s=0.05)
    lb_drain_s = time.monotonic() - drained_at
    logger.info(
        "drain -> readiness 503: %.2f s; -> HAProxy DRAIN: %.2f s (with the CLI's start)", unready_s, lb_drain_s
    )
    assert ready_status(farm.ready_ports[1]) == 200
    drain = next(a for a in monitor.http.get("/agents").json()["agents"] if a["pid"] == first.pid)["drain"]
    deadline = datetime.fromisoformat(drain["deadline"])

    # The drained process's tabs show the message (as text) and a countdown that ticks; the others nothing.
    on_first = [t for t in tabs if placed[t.session_id] == first.pid]
    on_second = [t for t in tabs if placed[t.session_id] == second.pid]
    for tab in on_first:
        expect(banners(tab.page)).to_have_text(re.compile(r"^This session ends in 0:[0-2]\d: Deploy of <b>v2</b> now$"))
    shown = banners(on_first[0].page)
    before = shown.inner_text()
    wait_until(lambda: shown.inner_text() != before, timeout_s=5, interval_s=0.1)
    for tab in on_second:
        expect(banners(tab.page)).to_have_count(0)

    # Every tab opened now lands on the other process.
    later = [open_tab(browser, farm.lb.url) for _ in range(4)]
    tabs += later
    assert {pid_of(monitor, t) for t in later} == {second.pid}

    # At the deadline the drained process's sessions end as drained; the others live on.
    first_ids = [t.session_id for t in on_first]
    wait_until(lambda: all(monitor.ended_as(sid) is not None for sid in first_ids), timeout_s=DEADLINE_S + 15)
    lags = []
    for tab in on_first:
        ended = monitor.session(tab.session_id)
        assert ended["end_reason"] == "drained"
        lags.append((datetime.fromisoformat(ended["ended_at"]) - deadline).total_seconds())
    logger.info("drained sessions ended %s s after the deadline", ", ".join(f"{lag:+.2f}" for lag in lags))
    assert all(-2 <= lag <= 2 for lag in lags), lags
    expect(on_first[0].page.get_by_text("This session has ended: Deploy of <b>v2</b> now").first).to_be_visible()
    assert all(monitor.ended_as(t.session_id) is None for t in [*on_second, *later])
    history = monitor.http.get("/history", params={"reason": "drained"}).json()
    assert {s["session_id"] for s in history["sessions"]} == {t.session_id for t in on_first}

    # Undrained, it takes new tabs again (the fewest connections: all of them, here).
    assert "undrained" in cli("undrain", f"{host}:{first.pid}", monitor=monitor)
    wait_until(lambda: farm.lb.states().get("panel1") == "UP", timeout_s=10, interval_s=0.05)
    assert ready_status(farm.ready_ports[0]) == 200
    again = [open_tab(browser, farm.lb.url) for _ in range(2)]
    tabs += again
    assert {pid_of(monitor, t) for t in again} == {first.pid}


@pytest.mark.timeout(120)
def test_sigterm_tells_open_pages_the_server_restarts(
    panel_server: Callable[..., PanelServer], monitor: Monitor, context: BrowserContext, websocket_events: Any
) -> None:
    panel = panel_server("plain.py", args=("--setup", SETUP))
    page = context.new_page()
    page.goto(panel.app_url("plain"))
    label = page.get_by_text(SESSION_TEXT)
    expect(label).to_be_visible()
    match = SESSION_TEXT.search(label.inner_text())
    assert match is not None
    wait_until(lambda: any(s["session_id"] == match.group(1) for s in monitor.sessions(app="plain")))
    os.kill(panel.pid, signal.SIGTERM)
    # The notice, and maybe its copy in the toast library's screen-reader announcer: the first is the visible one.
    expect(
        page.get_by_text("This server is restarting: reload the page in a moment to continue.").first
    ).to_be_visible()
    expect(page.get_by_text("Server connection lost")).to_have_count(0)
    panel.proc.wait(timeout=15)
    closed = websocket_events(page)["closed"]
    assert closed and closed[0]["code"] == 1001, closed
    assert monitor.ended_as(match.group(1)) == "process_exit"
