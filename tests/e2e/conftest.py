"""End-to-end fixtures: a real monitor server, real ``panel serve`` processes, and headless Chromium.

Every process here is a child of the test run on a free loopback port, and is ended by its own PID
(with its own children, for ``--num-procs``). A missing Chromium is an error, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, ServerProcess, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
"""The checkout's root: on ``PYTHONPATH`` of the Panel servers so ``tests.e2e.apps.markers`` imports."""
APPS = ROOT / "tests" / "e2e" / "apps"


WEBSOCKET_RECORDER = """
(() => {
  const now = () => performance.timeOrigin + performance.now();
  const record = { opened: [], closed: [] };
  window.__sessionMonitorWs = record;
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      record.opened.push(now());
      this.addEventListener("close", (e) => record.closed.push({ at: now(), code: e.code, reason: e.reason }));
    }
  };
})();
"""
"""Init script: records, in the page, when each websocket opened and closed (epoch ms, with code and reason)."""

PANEL_START_TIMEOUT_S = 60.0
MONITOR_START_TIMEOUT_S = 90.0
"""A loaded machine (CI, or several test runs at once) took over 30 s to start the monitor server."""


def read_websocket_events(page: Page) -> dict[str, list[Any]]:
    """What :data:`WEBSOCKET_RECORDER` saw in ``page``: ``{"opened": [ms...], "closed": [{at, code, reason}...]}``."""
    return page.evaluate("window.__sessionMonitorWs")  # type: ignore[no-any-return]


class Monitor:
    """A ``session-monitor serve`` child process on SQLite, with the few API calls the tests need.

    It starts in the background (a Panel server can boot meanwhile); :meth:`wait_ready` waits for it.
    """

    def __init__(self, database: Path, log_path: Path) -> None:
        self.process = ServerProcess({"SESSION_MONITOR_DATABASE_URL": f"sqlite:///{database}"}, log_path=log_path)
        self.url = self.process.url
        self.http = httpx.Client(base_url=self.url, timeout=10.0, event_hooks={"request": [self._ready]})
        self._starting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="monitor-start")
        self._started: Future[ServerProcess] = self._starting.submit(self.process.start, MONITOR_START_TIMEOUT_S)

    def wait_ready(self) -> Monitor:
        self._started.result(timeout=MONITOR_START_TIMEOUT_S + 30)
        return self

    def _ready(self, _request: httpx.Request) -> None:
        self.wait_ready()

    def sessions(self, app: str | None = None) -> list[dict[str, Any]]:
        """Live sessions, as ``GET /sessions`` lists them."""
        response = self.http.get("/sessions", params={"app": app} if app else None)
        response.raise_for_status()
        return response.json()["sessions"]  # type: ignore[no-any-return]

    def session(self, session_id: str) -> dict[str, Any]:
        """One session, live or ended (``GET /sessions/{id}``)."""
        response = self.http.get(f"/sessions/{session_id}")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def kill(self, session_id: str, reason: str | None = None) -> dict[str, Any]:
        body = {"reason": reason} if reason is not None else None
        response = self.http.post(f"/sessions/{session_id}/kill", json=body)
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def kill_all(self, app: str) -> dict[str, Any]:
        response = self.http.post(f"/apps/{app}/kill-all")
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    def ended_as(self, session_id: str) -> str | None:
        """The end reason once the session ended, else ``None``."""
        return self.session(session_id)["end_reason"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.http.close()
        try:
            self._started.result(timeout=MONITOR_START_TIMEOUT_S + 30)
        finally:
            self._starting.shutdown()
            self.process.stop()


class PanelServer:
    """``panel serve`` of some test apps as a child process, reporting to a monitor."""

    def __init__(
        self,
        apps: tuple[str, ...],
        monitor_url: str,
        markers: Path,
        log_path: Path,
        num_procs: int | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.markers = markers
        self.log_path = log_path
        command = [sys.executable, "-m", "panel", "serve", *(str(APPS / app) for app in apps)]
        command += ["--address", "127.0.0.1", "--port", str(self.port)]
        command += ["--allow-websocket-origin", f"127.0.0.1:{self.port}", "--liveness"]
        if num_procs is not None:
            command += ["--num-procs", str(num_procs)]
        command += args
        env = {
            **os.environ,
            **(env or {}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            "SESSION_MONITOR_URL": monitor_url,
            "SESSION_MONITOR_TEST_MARKERS": str(markers),
        }
        with open(log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.pid = self.proc.pid

    def wait_ready(self) -> PanelServer:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"panel serve exited with {self.proc.returncode}: {self.log()}")
            try:
                # /liveness builds no session, unlike a GET of an app page.
                return httpx.get(f"{self.url}/liveness", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ready, timeout_s=PANEL_START_TIMEOUT_S, interval_s=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; panel serve log:\n{self.log()}") from None
        return self

    def app_url(self, app: str) -> str:
        return f"{self.url}/{app}"

    def marker(self, kind: str, session_id: str) -> Path:
        return self.markers / f"{kind}-{session_id}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def stop(self) -> None:
        """SIGTERM this process and the workers it forked (by PID); SIGKILL what is left after a while."""
        if self.proc.poll() is not None:
            return
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            children = []
        os.kill(self.pid, signal.SIGTERM)
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        _gone, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)


SHARED_APPS = ("tracked.py", "plain.py", "reconnect.py")
"""The test apps of the module-wide Panel server (:func:`apps`)."""


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitor]:
    """A real monitor server (``python -m session_monitor serve``) on SQLite in a temporary folder, per module."""
    folder = tmp_path_factory.mktemp("monitor")
    server = Monitor(folder / "monitor.sqlite3", folder / "monitor.log")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def markers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the test apps' callbacks leave their marker files (``SESSION_MONITOR_TEST_MARKERS``)."""
    return tmp_path_factory.mktemp("markers")


@pytest.fixture
def panel_server(monitor: Monitor, markers_dir: Path, tmp_path: Path) -> Iterator[Callable[..., PanelServer]]:
    """Start ``panel serve`` of test apps (file names under ``tests/e2e/apps``), reporting to ``monitor``.

    Call it as ``panel_server("tracked.py", "plain.py", num_procs=2)`` (``args=`` more ``panel serve`` options,
    ``env=`` more environment); every server started is stopped at teardown. For the apps of
    :data:`SHARED_APPS` with no special options, :func:`apps` is quicker.
    """
    started: list[PanelServer] = []

    def start(
        *apps: str, num_procs: int | None = None, args: tuple[str, ...] = (), env: dict[str, str] | None = None
    ) -> PanelServer:
        log_path = tmp_path / f"panel-{len(started)}.log"
        server = PanelServer(apps, monitor.url, markers_dir, log_path, num_procs=num_procs, args=args, env=env)
        started.append(server)
        monitor.wait_ready()
        return server.wait_ready()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def module_panel_server(
    monitor: Monitor, markers_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., PanelServer]]:
    """:func:`panel_server` for a whole module: the servers started are stopped when the module is done."""
    started: list[PanelServer] = []
    folder = tmp_path_factory.mktemp("panels")

    def start(*apps: str, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> PanelServer:
        monitor.wait_ready()  # first: on a loaded machine, starting beside Panel servers can take it over a minute
        log_path = folder / f"panel-{len(started)}.log"
        server = PanelServer(apps, monitor.url, markers_dir, log_path, args=args, env=env)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="module")
def shared_panel(
    monitor: Monitor, markers_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PanelServer]:
    log_path = tmp_path_factory.mktemp("panel") / "panel.log"
    server = PanelServer(SHARED_APPS, monitor.url, markers_dir, log_path)
    try:
        monitor.wait_ready()
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture
def apps(shared_panel: PanelServer, monitor: Monitor) -> Iterator[PanelServer]:
    """One ``panel serve`` of :data:`SHARED_APPS` for the module, with no live session at the start of a test.

    At teardown every session a test left live (an app it did not kill, a closed tab) is killed, and the
    next test starts only once the server lists none: tests share the servers, not their sessions.
    """
    names = [Path(app).stem for app in SHARED_APPS]
    leftovers = {name: monitor.sessions(app=name) for name in names}
    assert not any(leftovers.values()), f"live sessions left by an earlier test: {leftovers}"
    try:
        yield shared_panel
    finally:
        for name in names:
            if monitor.sessions(app=name):
                monitor.kill_all(name)
        wait_until(lambda: not any(monitor.sessions(app=name) for name in names), timeout_s=30)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's, at ``/usr/bin/chromium`` unless ``SESSION_MONITOR_CHROMIUM`` says otherwise)."""
    if not Path(CHROMIUM).exists():  # a failure, never a skip: CI must run the browser tests
        pytest.fail(f"Chromium is required for the e2e tests and was not found at {CHROMIUM}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    """A fresh browser profile whose pages record their websocket events (see :func:`websocket_events`)."""
    ctx = browser.new_context(viewport={"width": 1100, "height": 520})
    ctx.set_default_timeout(15_000)
    ctx.add_init_script(WEBSOCKET_RECORDER)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def websocket_events() -> Callable[[Page], dict[str, list[Any]]]:
    """``websocket_events(page)``: when the page's websockets opened and closed (epoch ms), with code and reason.

    A fixture rather than an import: pytest imports this conftest under its own module name.
    """
    return read_websocket_events
