"""Liveness settings, the expiry rule, the setup script's app names, and registering a session only once it
has a websocket."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from bokeh.core.types import ID
from bokeh.document import Document
from bokeh.server.connection import ServerConnection
from bokeh.server.session import ServerSession
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.testing import bind_unused_port
from tornado.web import Application
from tornado.websocket import WebSocketClientConnection, WebSocketHandler, websocket_connect

from session_monitor import ConfigError, SessionClient
from session_monitor.client.agent import Agent
from session_monitor.client.liveness import AppSeconds, Liveness, LivenessConfig, expiry, resolve_liveness
from session_monitor.client.setup_hook import ROOT_APP_NAME, app_name_of
from tests.helpers import wait_until

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LIVENESS_ENV = (
    "SESSION_MONITOR_DISCONNECT_GRACE_S",
    "SESSION_MONITOR_DEAD_SOCKET_S",
    "SESSION_MONITOR_IDLE_TIMEOUT_S",
    "SESSION_MONITOR_MAX_SESSION_AGE_S",
)


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in LIVENESS_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_app_seconds_bare_number_is_every_app_and_pairs_override_it() -> None:
    parsed = AppSeconds.parse("X", "1800, admin=0 ,reports=600")
    assert parsed.for_app("sales") == 1800
    assert parsed.for_app("reports") == 600
    assert parsed.for_app("admin") is None  # 0: off for that app
    only = AppSeconds.parse("X", "reports=60")
    assert (only.for_app("reports"), only.for_app("sales")) == (60, None)
    assert AppSeconds.parse("X", "*=30").for_app("any") == 30
    assert AppSeconds.parse("X", None).for_app("any") is None


@pytest.mark.parametrize("text", ["soon", "a=b", "-5", "x=-1"])
def test_app_seconds_refuses_bad_values(text: str) -> None:
    with pytest.raises(ConfigError):
        AppSeconds.parse("SESSION_MONITOR_IDLE_TIMEOUT_S", text)


def test_liveness_defaults_environment_and_arguments(no_env: pytest.MonkeyPatch) -> None:
    default = resolve_liveness()
    assert (default.disconnect_grace_s, default.dead_socket_s) == (2.0, 60.0)
    assert default.idle_timeout_s.for_app("a") is None and default.max_session_age_s.for_app("a") is None
    assert default.sweep_interval_s == 5.0

    no_env.setenv("SESSION_MONITOR_DISCONNECT_GRACE_S", "5")
    no_env.setenv("SESSION_MONITOR_DEAD_SOCKET_S", "8")
    no_env.setenv("SESSION_MONITOR_IDLE_TIMEOUT_S", "600,admin=0")
    from_env = resolve_liveness()
    assert (from_env.disconnect_grace_s, from_env.dead_socket_s, from_env.sweep_interval_s) == (5.0, 8.0, 2.0)
    assert from_env.idle_timeout_s.for_app("a") == 600 and from_env.idle_timeout_s.for_app("admin") is None

    explicit = resolve_liveness(disconnect_grace_s=1.5, idle_timeout_s="60")
    assert explicit.disconnect_grace_s == 1.5 and explicit.idle_timeout_s.for_app("admin") == 60

    no_env.setenv("SESSION_MONITOR_DEAD_SOCKET_S", "0")
    with pytest.raises(ConfigError):
        resolve_liveness()


def test_expiry_idle_counts_from_the_latest_activity_and_never_while_running() -> None:
    rule = {"started_at": T0, "idle_timeout_s": 600.0, "max_session_age_s": None}
    assert expiry(T0 + timedelta(seconds=599), last_activity_at=None, running=False, **rule) is None
    assert "no interaction for 10 min" in str(
        expiry(T0 + timedelta(seconds=600), last_activity_at=None, running=False, **rule)
    )
    later = T0 + timedelta(seconds=500)
    assert expiry(T0 + timedelta(seconds=1000), last_activity_at=later, running=False, **rule) is None
    assert expiry(T0 + timedelta(seconds=1100), last_activity_at=later, running=False, **rule) is not None
    assert expiry(T0 + timedelta(hours=5), last_activity_at=None, running=True, **rule) is None


def test_expiry_maximum_age_applies_even_while_running_and_off_means_never() -> None:
    at = T0 + timedelta(hours=2)
    why = expiry(at, started_at=T0, last_activity_at=at, running=True, idle_timeout_s=None, max_session_age_s=7200)
    assert why == "older than the maximum session age of 2 h"
    never = expiry(at, started_at=T0, last_activity_at=None, running=False, idle_timeout_s=None, max_session_age_s=None)
    assert never is None


def test_app_name_comes_from_the_route_not_the_request() -> None:
    def context(url: str | None) -> SimpleNamespace:
        return SimpleNamespace(id="s", server_context=SimpleNamespace(application_context=SimpleNamespace(url=url)))

    assert app_name_of(context("/sales")) == "sales"
    assert app_name_of(context("/team/q3/")) == "team/q3"
    assert app_name_of(context("/")) == ROOT_APP_NAME
    assert app_name_of(SimpleNamespace(id="s")) == ROOT_APP_NAME


def unregistered(agent: Agent, session_id: str) -> SessionClient:
    """A tracker as the Panel integration makes it: known locally, not yet registered with the agent."""
    return SessionClient("app", None, agent=agent, session_id=session_id, key=session_id)


def test_a_session_that_ends_before_its_first_websocket_never_reaches_the_server(agent, server) -> None:
    phantom = unregistered(agent, "phantom")
    ran: list[str] = []
    phantom.on_kill(lambda: ran.append("on_kill"))
    phantom.finish("closed")
    phantom.activate()  # too late: nothing is registered
    real = unregistered(agent, "real")
    real.activate()
    wait_until(lambda: server.sessions_sent("real"), timeout_s=5)
    assert ran == ["on_kill"]
    assert server.sessions_sent("phantom") == []
    assert all(end["session_id"] != "phantom" for end in server.ends_sent())


def test_an_activated_session_that_ends_is_sent_with_its_reason(agent, server) -> None:
    tracker = unregistered(agent, "s1")
    tracker.activate()
    tracker.activate()  # once only
    wait_until(lambda: server.sessions_sent("s1"), timeout_s=5)
    tracker.finish("browser_lost")
    wait_until(lambda: any(end["session_id"] == "s1" for end in server.ends_sent()), timeout_s=5)
    assert [end["reason"] for end in server.ends_sent() if end["session_id"] == "s1"] == ["browser_lost"]
    assert len(server.sessions_sent("s1")) == 1


# --- Watch: a real Bokeh ServerSession, real Tornado websockets, closed in the ways browsers close them ---


class BokehLikeHandler(WebSocketHandler):
    """Tornado's handler glued to a Bokeh session the way Bokeh's ``WSHandler`` is: a ``ServerConnection``
    subscribes on open; ``on_close`` detaches it (Tornado has set ``close_code`` by then)."""

    def initialize(self, session: ServerSession) -> None:
        self.session = session
        self.connection: ServerConnection | None = None

    def open(self) -> None:
        self.connection = ServerConnection(None, self, None, self.session)

    def on_close(self) -> None:
        if self.connection is not None:
            self.connection.detach_session()


class Events:
    """What the watch told the integration, in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.at: dict[str, float] = {}
        """When each kind was last seen (the loop's clock, taken in the callback)."""

    def add(self, kind: str, session_id: str) -> None:
        self.seen.append((kind, session_id))
        self.at[kind] = IOLoop.current().time()

    def end(self, session_id: str, reason: str, _message: str | None) -> None:
        self.add("end:" + reason, session_id)

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.seen]


@pytest.fixture
async def watched() -> Any:
    """A Bokeh session behind a real websocket endpoint, watched with a 0.3 s grace; yields (url, events, liveness)."""
    loop = IOLoop.current()
    session = ServerSession(ID("s1"), Document(), loop)
    events = Events()
    liveness = Liveness(
        LivenessConfig(disconnect_grace_s=GRACE_S, dead_socket_s=60.0),
        loop,
        end=events.end,
        on_disconnect=lambda sid: events.add("disconnected", sid),
        on_reconnect=lambda sid: events.add("reconnected", sid),
        cull=lambda _watch, _now: None,
    )
    liveness.watch("s1", session, lambda: events.add("first", "s1"))
    app = Application([(r"/ws", BokehLikeHandler, {"session": session})])
    sock, port = bind_unused_port("127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets([sock])
    try:
        yield f"ws://127.0.0.1:{port}/ws", events, liveness, session
    finally:
        while OPEN_CLIENTS:
            OPEN_CLIENTS.pop().close()
        await asyncio.sleep(0.05)
        liveness.stop()
        server.stop()
        await server.close_all_connections()


GRACE_S = 0.3


async def eventually(predicate: Any, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


OPEN_CLIENTS: list[WebSocketClientConnection] = []
"""Every client a test opened, closed at teardown (a closed one is a no-op)."""


async def connected(url: str, session: ServerSession) -> WebSocketClientConnection:
    count = session.connection_count
    client = await websocket_connect(url)
    OPEN_CLIENTS.append(client)
    await eventually(lambda: session.connection_count == count + 1)
    return client


async def test_a_browser_goodbye_1001_ends_the_session_at_once(watched: Any) -> None:
    url, events, liveness, session = watched
    client = await connected(url, session)
    client.close(1001)  # what Chromium sends when the tab closes, reloads or navigates away
    await eventually(lambda: "end:browser_lost" in events.kinds())
    assert events.kinds() == ["first", "end:browser_lost"]  # never "disconnected": no grace
    assert "s1" not in liveness.watches


@pytest.mark.parametrize("how", ["no close frame", "close 1000", "server closed 1001"])
async def test_other_closes_wait_for_the_grace_then_end_as_browser_lost(watched: Any, how: str) -> None:
    url, events, _liveness, session = watched
    client = await connected(url, session)
    if how == "no close frame":  # a killed browser, a cut connection: the TCP connection just ends
        assert client.protocol is not None and client.protocol.stream is not None
        client.protocol.stream.close()
    elif how == "close 1000":
        client.close(1000)
    else:  # our dead-socket close (or a kill) is 1001 too; the browser only echoes it
        next(iter(session._subscribed_connections))._socket.close(1001, "server side")
    await eventually(lambda: "end:browser_lost" in events.kinds())
    assert events.at["end:browser_lost"] - events.at["disconnected"] >= GRACE_S * 0.99
    assert events.kinds() == ["first", "disconnected", "end:browser_lost"]


async def test_a_websocket_back_within_the_grace_keeps_the_session(watched: Any) -> None:
    url, events, liveness, session = watched
    client = await connected(url, session)
    assert client.protocol is not None and client.protocol.stream is not None
    client.protocol.stream.close()
    await eventually(lambda: "disconnected" in events.kinds())
    again = await connected(url, session)  # Panel's reconnect=True: the first attempt is immediate
    await asyncio.sleep(GRACE_S * 2)
    assert events.kinds() == ["first", "disconnected", "reconnected"]
    assert "s1" in liveness.watches
    again.close(1001)  # and that socket's goodbye still ends it at once
    await eventually(lambda: events.kinds()[-1] == "end:browser_lost")


async def test_a_goodbye_from_one_of_two_websockets_ends_nothing(watched: Any) -> None:
    url, events, _liveness, session = watched
    first = await connected(url, session)
    second = await connected(url, session)
    first.close(1001)
    await eventually(lambda: session.connection_count == 1)
    await asyncio.sleep(GRACE_S * 2)
    assert events.kinds() == ["first"]
    second.close(1001)
    await eventually(lambda: events.kinds() == ["first", "end:browser_lost"])


class _Socket:
    def __init__(self) -> None:
        self.pings = 0
        self.closed: tuple[int, str] | None = None

    def on_pong(self, data: bytes) -> None:
        pass

    def ping(self, data: bytes) -> None:
        self.pings += 1

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


class _Connection:
    def __init__(self, socket: _Socket) -> None:
        self._socket = socket


class _Session:
    def __init__(self) -> None:
        self._subscribed_connections: set[object] = set()

    def subscribe(self, connection: object) -> None:
        self._subscribed_connections.add(connection)

    def unsubscribe(self, connection: object) -> None:
        self._subscribed_connections.discard(connection)


async def test_a_blocked_loop_is_not_websocket_silence() -> None:
    """A sweep delayed by a blocked loop (no pong could be read) does not count the block as silence."""
    from tornado.ioloop import IOLoop

    from session_monitor.client.liveness import Liveness, LivenessConfig

    now = [1000.0]
    ended: list[str] = []
    liveness = Liveness(
        LivenessConfig(dead_socket_s=8.0),
        IOLoop.current(),
        end=lambda sid, reason, message: ended.append(reason),
        on_disconnect=lambda sid: None,
        on_reconnect=lambda sid: None,
        cull=lambda watch, at: None,
        clock=lambda: now[0],
    )
    try:
        session = _Session()
        socket = _Socket()
        connection = _Connection(socket)
        watch = liveness.watch("s1", session, lambda: None)
        session.subscribe(connection)
        watch._subscribed(connection)
        now[0] += 14.0  # blocked before the first sweep ever ran: 12 s late
        liveness.sweep()
        assert socket.closed is None
        liveness.sweep()
        now[0] += 2.0
        liveness.sweep()  # on time
        now[0] += 12.0  # the loop was blocked for 10 s past the 2 s sweep interval
        liveness.sweep()
        assert socket.closed is None and watch.live_connections() == [connection]
        # A browser that really stopped answering is still found dead, after dead_socket_s of healthy time.
        for _ in range(4):
            now[0] += 2.0
            liveness.sweep()
        assert socket.closed is not None and socket.closed[0] == 1001
    finally:
        liveness.stop()
