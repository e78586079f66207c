"""Browser liveness against real ``panel serve --setup <our script>`` servers and headless Chromium.

The apps are tracked by the setup script alone (``untracked.py`` imports nothing of ours; ``tracked.py``
also calls ``get_tracker`` and must get the same tracker). Timeouts are shortened through the
environment; latencies are measured by ``benchmarks/tab_close.py``, not asserted here.

Two servers for the whole module: one with ``--num-procs 2`` (sessions of several workers), one single
process behind a TCP relay the tests can cut (a reconnection must reach the worker that holds the
session: with ``--num-procs`` it would land on either).

How a page goes away decides how its session ends:

- a tab closed (or reloaded, navigated away): Chromium closes the websocket with 1001 ("going away");
  the session ends at once;
- a killed browser: its sockets are closed by the kernel, no close frame: the grace applies;
- a cut connection (the relay drops both sides, no close frame either way): the grace applies, and
  Panel's ``reconnect=True`` comes back inside it, to the same session.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest
from playwright.sync_api import BrowserContext, Page, expect
from tests.e2e.raw_chromium import RawChromium
from tests.helpers import wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Monitor, PanelServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = ROOT / "src" / "session_monitor" / "client" / "setup_hook.py"
DEAD_SOCKET_S = 4.0
"""Shortened dead-socket timeout of these tests (60 s by default)."""
GRACE_S = 3.0
"""Disconnect grace of these tests (2 s by default): long beside a goodbye's end (tens of ms), short to wait."""
BACKGROUND_S = 3 * DEAD_SOCKET_S
"""How long tabs stay hidden or frozen: three dead-socket timeouts, the compressed "10 minutes"."""
WAIT_S = 30.0
SESSION_TEXT = re.compile(r"^session\s+([\w-]+)$")
"""What the apps show: ``session <Bokeh session id>``."""
ENV = {"SESSION_MONITOR_DEAD_SOCKET_S": str(DEAD_SOCKET_S), "SESSION_MONITOR_DISCONNECT_GRACE_S": str(GRACE_S)}


class CuttableRelay:
    """A TCP relay on loopback to a Panel server that can drop every connection it carries at once.

    ``cut()`` shuts both sides of each connection down and resets them: neither end gets a websocket
    close frame, as when a network path fails. The relay keeps listening, so a reconnection goes through.
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._upstream_port = 0
        self.server: PanelServer | None = None
        """The Panel server it relays to (set by the fixture)."""

    def start(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was closed: stop
                return
            server = socket.create_connection(("127.0.0.1", self._upstream_port))
            with self._lock:
                self._pairs.append((client, server))
            self._spawn(self._pump, client, server)
            self._spawn(self._pump, server, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for side in (source, sink):  # one side ended: end the other the same way
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        """Drop every connection now (RST after shutdown: no byte more either way); how many pairs."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for side in pair:
                try:
                    side.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    side.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                side.close()
        return len(pairs)

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # wakes the accepting thread (close alone leaves it blocked)
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)


def module_panel(
    monitor: Monitor, markers_dir: Path, folder: Path, *apps: str, num_procs: int | None, extra_origin: int | None
) -> PanelServer:
    from conftest import PanelServer  # type: ignore[import-not-found]  # the class of the fixtures' servers (pytest imports conftest under this name)

    args: tuple[str, ...] = ("--setup", str(SETUP_SCRIPT))
    if extra_origin is not None:
        args += ("--allow-websocket-origin", f"127.0.0.1:{extra_origin}")
    server = PanelServer(apps, monitor.url, markers_dir, folder / "panel.log", num_procs=num_procs, args=args, env=ENV)
    monitor.wait_ready()
    try:
        return server.wait_ready()  # type: ignore[no-any-return]  # PanelServer is untyped here (conftest import)
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="module")
def procs2(monitor: Monitor, markers_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PanelServer]:
    """``panel serve --num-procs 2`` of ``untracked.py`` and ``tracked.py`` for the module."""
    server = module_panel(
        monitor, markers_dir, tmp_path_factory.mktemp("procs2"), "untracked.py", "tracked.py", num_procs=2,
        extra_origin=None,
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def relayed(monitor: Monitor, markers_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CuttableRelay]:
    """One ``panel serve`` process of ``untracked.py`` and ``reconnect.py``, reached through a relay."""
    relay = CuttableRelay()
    server = module_panel(
        monitor, markers_dir, tmp_path_factory.mktemp("relayed"), "untracked.py", "reconnect.py", num_procs=None,
        extra_origin=relay.port,
    )  # fmt: skip
    relay.start(server.port)
    relay.server = server
    try:
        yield relay
    finally:
        relay.stop()
        server.stop()


def page_session_id(page: Page) -> str:
    text = page.get_by_text(SESSION_TEXT).first.text_content() or ""
    found = SESSION_TEXT.search(text.strip())
    assert found, f"no session id in {text!r}"
    return found.group(1)


def live(monitor: Monitor) -> dict[str, dict[str, Any]]:
    return {s["session_id"]: s for s in monitor.sessions()}


def worker_pids(panel: PanelServer) -> set[int]:
    return {child.pid for child in psutil.Process(panel.pid).children()}


def new_session(monitor: Monitor, app: str, known: set[str]) -> str:
    new = wait_until(lambda: {s["session_id"] for s in monitor.sessions(app=app)} - known, timeout_s=WAIT_S)
    assert len(new) == 1, new
    return str(next(iter(new)))


def ids_of(monitor: Monitor, app: str) -> set[str]:
    return {s["session_id"] for s in monitor.sessions(app=app)}


def test_sessions_of_unmodified_apps_under_num_procs_end_when_tabs_close(
    monitor: Monitor, procs2: PanelServer, context: BrowserContext
) -> None:
    panel = procs2
    before = set(live(monitor))
    pages: dict[str, Page] = {}
    apps: dict[str, str] = {}
    for i in range(10):
        app = "untracked" if i % 2 else "tracked"
        page = context.new_page()
        page.goto(panel.app_url(app))
        sid = page_session_id(page)
        pages[sid], apps[sid] = page, app

    # Exactly the ten sessions with a browser: no copy from the other worker, none counted twice.
    sessions = wait_until(lambda: len(s := live(monitor)) >= 10 and s, timeout_s=WAIT_S)
    assert before == set() and set(sessions) == set(pages)
    workers = worker_pids(panel)
    assert len(workers) == 2
    for sid, session in sessions.items():
        assert session["host"] == socket.gethostname()
        assert session["pid"] in workers, session
        assert session["app_name"] == apps[sid]
        # tracked.py asks get_tracker(app_name="tracked", user_id="e2e"): the setup script's tracker, adopted.
        assert session["user_id"] == ("e2e" if apps[sid] == "tracked" else None)
    wait_until(lambda: all(s["visibility"] == "visible" for s in live(monitor).values()), timeout_s=WAIT_S)

    closing = list(pages)[:5]
    for sid in closing:
        pages.pop(sid).close()
    for sid in closing:
        wait_until(lambda sid=sid: monitor.ended_as(sid) == "browser_lost", timeout_s=WAIT_S)
    assert set(live(monitor)) == set(pages)

    # A kill reaches the page of an app that enabled no notifications, through the setup script's tracker.
    killed, killed_page = next(iter(pages.items()))
    monitor.kill(killed, reason="liveness test")
    killed_page.locator(".notyf__toast", has_text="ended by an administrator").first.wait_for()
    wait_until(lambda: monitor.ended_as(killed) == "killed", timeout_s=WAIT_S)

    # A reload is a new session; the old one is ended as the tab's browser left it.
    old, page = list(pages.items())[1]
    page.reload()
    new = page_session_id(page)
    assert new != old
    wait_until(lambda: monitor.ended_as(old) == "browser_lost", timeout_s=WAIT_S)
    wait_until(lambda: new in live(monitor), timeout_s=WAIT_S)
    assert len(live(monitor)) == 4


def test_background_tabs_live_on_and_a_stopped_browser_is_found(monitor: Monitor, procs2: PanelServer) -> None:
    panel = procs2
    browser = RawChromium()
    try:
        ids = {}
        for name, app in (("hidden", "untracked"), ("frozen", "tracked")):
            known = ids_of(monitor, app)
            tab = browser.open(panel.app_url(app))
            ids[name] = new_session(monitor, app, known)
            if name == "hidden":
                hidden = tab
            else:
                frozen = tab

        front = browser.open("about:blank")
        browser.bring_to_front(front)
        wait_until(lambda: hidden.js("document.visibilityState") == "hidden", timeout_s=WAIT_S)
        wait_until(lambda: live(monitor)[ids["hidden"]]["visibility"] == "hidden", timeout_s=WAIT_S)
        frozen.send("Page.setWebLifecycleState", state="frozen")

        # Three dead-socket timeouts in the background: both answer pings, so both stay live.
        deadline = time.monotonic() + BACKGROUND_S
        while time.monotonic() < deadline:
            sessions = live(monitor)
            for name, sid in ids.items():
                assert sid in sessions, f"the {name} tab's session was ended: {monitor.session(sid)}"
                assert sessions[sid]["state"] != "disconnected", sessions[sid]
            time.sleep(0.5)  # the watch's polling interval, not a wait for an event
        frozen.send("Page.setWebLifecycleState", state="active")

        # A stopped browser keeps its sockets open but answers no ping: both sessions end as browser_lost.
        browser.signal_tree(signal.SIGSTOP)
        for sid in ids.values():
            wait_until(lambda sid=sid: monitor.ended_as(sid) == "browser_lost", timeout_s=4 * DEAD_SOCKET_S + WAIT_S)
    finally:
        browser.stop()


CLOSE_LOGGED = re.compile(r"WebSocket connection closed: code=(\w+)")
"""Bokeh's log line for each websocket that closes, with the code of the browser's close frame (``None``: none)."""
CLOSE_ATTEMPTS = 4
"""Tabs closed at most until one whose browser sent its close frame (Chromium drops it in a few percent)."""


def test_a_closed_tab_ends_its_session_at_once_with_its_callbacks(
    monitor: Monitor, procs2: PanelServer, context: BrowserContext
) -> None:
    def closes() -> list[str]:
        return CLOSE_LOGGED.findall(procs2.log_path.read_text(errors="replace"))

    for _ in range(CLOSE_ATTEMPTS):
        page = context.new_page()
        page.goto(procs2.app_url("tracked"))
        sid = page_session_id(page)
        wait_until(lambda sid=sid: sid in ids_of(monitor, "tracked"), timeout_s=WAIT_S)
        seen = len(closes())

        closed_at = time.monotonic()
        page.close()

        wait_until(lambda sid=sid: monitor.ended_as(sid) == "browser_lost", timeout_s=WAIT_S)
        took_s = time.monotonic() - closed_at
        # Nothing else closes meanwhile: the one new close line is this tab's (both workers log to one file).
        (code,) = wait_until(lambda seen=seen: closes()[seen:], timeout_s=WAIT_S)
        if code == "1001":  # Chromium's "going away": ended without the grace
            assert took_s < GRACE_S, f"ended {took_s:.2f} s after the tab closed: the {GRACE_S} s grace was waited"
            break
        # Chromium dropped the socket without its close frame: that close is abnormal, and waits out the grace.
        assert code == "None", code
        assert took_s >= GRACE_S, f"a close without a close frame ended after {took_s:.2f} s, before the grace"
    else:
        pytest.fail(f"in {CLOSE_ATTEMPTS} tab closes Chromium never sent its close frame: nothing was tested")
    wait_until(lambda: procs2.marker("on_kill", sid).exists(), timeout_s=WAIT_S)  # its on_kill callbacks ran
    wait_until(lambda: procs2.marker("destroyed", sid).exists(), timeout_s=WAIT_S)  # the Panel session is gone


def test_a_killed_browser_ends_its_session_after_the_grace(monitor: Monitor, relayed: CuttableRelay) -> None:
    assert relayed.server is not None
    known = ids_of(monitor, "untracked")
    browser = RawChromium()
    try:
        browser.open(relayed.server.app_url("untracked"))
        sid = new_session(monitor, "untracked", known)

        browser.signal_tree(signal.SIGKILL)  # the kernel closes its sockets: no close frame
        killed_at = time.monotonic()

        seen = wait_until(lambda: (one := monitor.session(sid))["state"] in ("disconnected", "ended") and one, WAIT_S)
        assert seen["state"] == "disconnected", f"not waiting out the grace: {seen}"
        wait_until(lambda: monitor.ended_as(sid) == "browser_lost", timeout_s=WAIT_S)
        assert time.monotonic() - killed_at >= GRACE_S
    finally:
        browser.stop()


def test_a_cut_connection_ends_after_the_grace_and_greys_the_page(
    monitor: Monitor, relayed: CuttableRelay, context: BrowserContext, websocket_events: Callable[[Page], Any]
) -> None:
    page = context.new_page()
    page.goto(f"{relayed.url}/untracked")
    sid = page_session_id(page)
    wait_until(lambda: sid in ids_of(monitor, "untracked"), timeout_s=WAIT_S)
    field = page.get_by_role("textbox")
    expect(field).to_be_enabled()
    # The browser component comes with the first websocket, just after the page: it is what greys the page. Its
    # host element is there before its module has run and put its handlers on: wait for the class it sets then.
    page.locator(".sm-browser-ready").first.wait_for(state="attached")

    assert relayed.cut() >= 1
    cut_at = time.monotonic()

    closed = wait_until(lambda: websocket_events(page)["closed"], timeout_s=WAIT_S)
    assert closed[0]["code"] == 1006, closed  # abnormal on the browser's side too: no close frame came
    seen = wait_until(lambda: (one := monitor.session(sid))["state"] in ("disconnected", "ended") and one, WAIT_S)
    assert seen["state"] == "disconnected", f"not waiting out the grace: {seen}"
    wait_until(lambda: monitor.ended_as(sid) == "browser_lost", timeout_s=WAIT_S)
    assert time.monotonic() - cut_at >= GRACE_S
    # This page does not reconnect (no reconnect=True): Bokeh gave the websocket up, the page shows it.
    expect(page.locator("div.sm-session-ended")).to_be_visible()
    expect(field).to_be_disabled()
    assert len(websocket_events(page)["opened"]) == 1


def test_a_reconnection_inside_the_grace_keeps_the_session(
    monitor: Monitor, relayed: CuttableRelay, context: BrowserContext, websocket_events: Callable[[Page], Any]
) -> None:
    assert relayed.server is not None
    markers = relayed.server.markers
    page = context.new_page()
    page.goto(f"{relayed.url}/reconnect")  # pn.extension(reconnect=True): Bokeh retries at once
    sid = page_session_id(page)
    wait_until(lambda: sid in ids_of(monitor, "reconnect"), timeout_s=WAIT_S)
    assert len(list(markers.glob(f"built-*-{sid}"))) == 1

    assert relayed.cut() >= 1
    cut_at = time.monotonic()

    events = wait_until(lambda: len((ws := websocket_events(page))["opened"]) >= 2 and ws, timeout_s=WAIT_S)
    assert events["closed"][0]["code"] == 1006, events
    # Live through and past the grace, the same session: not ended, not rebuilt by the reconnection.
    polls = 0
    while time.monotonic() < cut_at + GRACE_S + 1.5:
        one = monitor.session(sid)
        assert one["end_reason"] is None, f"ended though its page came back: {one}"
        polls += 1
        time.sleep(0.1)  # the watch's polling interval, not a wait for an event
    assert polls >= 20
    wait_until(lambda: monitor.session(sid)["state"] != "disconnected", timeout_s=WAIT_S)
    assert sid in ids_of(monitor, "reconnect")
    assert len(list(markers.glob(f"built-*-{sid}"))) == 1
    expect(page.locator("div.sm-session-ended")).to_have_count(0)
