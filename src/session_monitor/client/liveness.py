"""Browser liveness of Panel sessions, judged from their websockets on the server side.

Why the websocket and not a browser heartbeat (DESIGN.md, "Facts measured"): a closed tab's socket
closes within 10-90 ms, while Bokeh destroys the session only 15-32 s later; a hidden tab runs timers
once a minute and a frozen one none, yet both keep their socket and answer pings. So:

- **goodbye**: the session's last websocket was closed by the browser with code 1001 ("going away":
  Chromium sends it when a tab is closed, reloaded or navigated away, and when the browser quits). The
  session ends as ``browser_lost`` at once.
- **closed**: the session's last websocket went away otherwise (no close frame: a killed browser, a
  cut connection; or any other code). The session is ``disconnected`` at once and, if no websocket
  comes back within ``disconnect_grace_s`` (Panel's ``reconnect=True`` retries at once), it ends as
  ``browser_lost``.
- **dead**: a websocket that answered none of our pings for ``dead_socket_s`` (a stopped browser, a
  network cut without FIN) is closed and counts as gone.
- **idle** (opt-in per app): no user interaction and no running task for ``idle_timeout_s``, or older
  than ``max_session_age_s``: ended as ``expired``.

Everything here runs on the session's IOLoop. The Bokeh objects are used through the few attributes
named in :class:`Watch`; ``client/panel.py`` wires them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.websocket import WebSocketClosedError

from session_monitor.client.liveness_config import (
    DEAD_SOCKET_S,
    DISCONNECT_GRACE_S,
    MAX_SWEEP_INTERVAL_S,
    AppSeconds,
    LivenessConfig,
    expiry,
    resolve_liveness,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEAD_SOCKET_S", "DISCONNECT_GRACE_S", "MAX_SWEEP_INTERVAL_S", "AppSeconds", "Liveness", "LivenessConfig",
    "Watch", "expiry", "resolve_liveness", "said_goodbye",
]  # fmt: skip

PING_PAYLOAD = b"session-monitor"
"""Our pings' payload: their pongs are not handed to Bokeh, which expects its own counters."""

DEAD_SOCKET_REASON = "no answer to pings"

GOING_AWAY = 1001
"""The close code of a browser leaving the page (RFC 6455 section 7.4.1)."""

_CLOSED_BY_SERVER = "_session_monitor_closed_by_server"
"""Set on a websocket handler once the server side (we, Bokeh, Panel) called its ``close``."""


def said_goodbye(socket: Any) -> bool:
    """Whether the browser closed this websocket with 1001 ("going away") on its own.

    Tornado sets ``close_code`` to the code of the client's close frame before ``on_close`` runs (and
    Bokeh unsubscribes the connection from ``on_close``); ``None`` when the connection ended without a
    close frame. When the server closed first, the client's frame only echoes the server's code (our
    kill closes with 1001 too): that is not a goodbye.
    """
    if socket is None or getattr(socket, _CLOSED_BY_SERVER, False):
        return False
    return getattr(socket, "close_code", None) == GOING_AWAY


EndSession = Callable[[str, str, str | None], None]
"""``end(session_id, reason, message)``: end the session on its loop (``message`` shown in the page, if any)."""


class Watch:
    """The websockets of one Bokeh ``ServerSession``, followed through its ``subscribe``/``unsubscribe``.

    Uses ``session.subscribe``, ``session.unsubscribe``, ``session._subscribed_connections``, and per
    connection ``connection._socket`` (a tornado ``WebSocketHandler``: ``ping``, ``close``, ``on_pong``).
    """

    def __init__(self, liveness: Liveness, session_id: str, session: Any, on_first_connect: Callable[[], None]) -> None:
        self.liveness = liveness
        self.session_id = session_id
        self.session = session
        self.on_first_connect = on_first_connect
        self.connected_once = False
        self.pong_at: dict[Any, float] = {}
        self.dead: set[Any] = set()
        self.disconnected_since: float | None = None
        self.busy_at: datetime | None = None
        self.closed = False
        self._grace: object | None = None
        self._unwrap: list[tuple[str, Any]] = []
        self._wrap("subscribe", self._subscribed)
        self._wrap("unsubscribe", self._unsubscribed)
        for connection in list(getattr(session, "_subscribed_connections", ())):
            self._connected(connection)

    def _wrap(self, name: str, after: Callable[[Any], None]) -> None:
        original = getattr(self.session, name)

        def wrapped(connection: Any) -> None:
            original(connection)
            try:
                after(connection)
            except Exception:
                logger.exception("session %s: liveness bookkeeping failed", self.session_id)

        setattr(self.session, name, wrapped)
        self._unwrap.append((name, original))

    def _subscribed(self, connection: Any) -> None:
        if not self.closed:
            self._connected(connection)

    def _unsubscribed(self, connection: Any) -> None:
        self.pong_at.pop(connection, None)
        self.dead.discard(connection)
        if not self.closed:
            self._check_gone(goodbye=said_goodbye(getattr(connection, "_socket", None)))

    def _connected(self, connection: Any) -> None:
        socket = getattr(connection, "_socket", None)
        if socket is not None and not getattr(socket, "_session_monitor_pong", False):
            self._follow(connection, socket)
        self.pong_at[connection] = self.liveness.clock()
        if self.disconnected_since is not None:
            logger.info("session %s: websocket back after %.1f s", self.session_id, self.elapsed_disconnected())
            self.disconnected_since = None
            self._cancel_grace()
            self.liveness.on_reconnect(self.session_id)
        if not self.connected_once:
            self.connected_once = True
            self.on_first_connect()

    def _follow(self, connection: Any, socket: Any) -> None:
        """Time this websocket's pongs (ours are not handed on) and note when the server closes it."""
        on_pong, close = socket.on_pong, socket.close

        def timed_on_pong(data: bytes) -> None:
            self.pong_at[connection] = self.liveness.clock()
            if data != PING_PAYLOAD:
                on_pong(data)

        def marked_close(code: int | None = None, reason: str | None = None) -> None:
            setattr(socket, _CLOSED_BY_SERVER, True)
            close(code, reason)

        socket.on_pong = timed_on_pong
        socket.close = marked_close
        socket._session_monitor_pong = True

    def live_connections(self) -> list[Any]:
        return [c for c in list(getattr(self.session, "_subscribed_connections", ())) if c not in self.dead]

    def elapsed_disconnected(self) -> float:
        since = self.disconnected_since
        return 0.0 if since is None else self.liveness.clock() - since

    def _check_gone(self, goodbye: bool = False) -> None:
        """No live websocket left: ended now after a browser's goodbye (1001), else ``disconnected`` now and
        ended after the grace unless one comes back."""
        if not self.connected_once or self.live_connections():
            return
        if goodbye:
            logger.info("session %s: browser left the page (websocket closed with 1001)", self.session_id)
            self.close()
            if self.liveness.watches.get(self.session_id) is self:
                del self.liveness.watches[self.session_id]
            self.liveness.end(self.session_id, "browser_lost", None)
            return
        if self.disconnected_since is not None:
            return
        self.disconnected_since = self.liveness.clock()
        self.liveness.on_disconnect(self.session_id)
        grace_s = self.liveness.config.disconnect_grace_s
        self._grace = self.liveness.loop.call_later(grace_s, self._grace_over)

    def _grace_over(self) -> None:
        self._grace = None
        if self.closed or self.disconnected_since is None or self.live_connections():
            return
        logger.info("session %s: browser lost (no websocket for %.1f s)", self.session_id, self.elapsed_disconnected())
        self.liveness.end(self.session_id, "browser_lost", None)

    def _cancel_grace(self) -> None:
        if self._grace is not None:
            self.liveness.loop.remove_timeout(self._grace)
            self._grace = None

    def sweep(self, now: float) -> None:
        """Ping every websocket; close those silent for ``dead_socket_s``."""
        dead_after_s = self.liveness.config.dead_socket_s
        for connection in self.live_connections():
            socket = getattr(connection, "_socket", None)
            if socket is None:
                continue
            silent_s = now - self.pong_at.setdefault(connection, now)
            if silent_s >= dead_after_s:
                logger.info("session %s: websocket silent for %.0f s, closed as dead", self.session_id, silent_s)
                self.dead.add(connection)
                try:
                    socket.close(1001, DEAD_SOCKET_REASON)
                except Exception:
                    logger.debug("session %s: closing a dead websocket failed", self.session_id, exc_info=True)
                continue
            with contextlib.suppress(WebSocketClosedError):
                socket.ping(PING_PAYLOAD)
        self._check_gone()

    def forgive(self, stalled_s: float, now: float) -> None:
        """The loop could not read pongs for ``stalled_s``: that time does not count as silence."""
        for connection, pong_at in list(self.pong_at.items()):
            self.pong_at[connection] = min(pong_at + stalled_s, now)

    def close(self) -> None:
        """Stop watching (the session ended): timers cancelled, Bokeh's methods given back."""
        if self.closed:
            return
        self.closed = True
        self._cancel_grace()
        for name, original in self._unwrap:
            with contextlib.suppress(Exception):
                setattr(self.session, name, original)
        self._unwrap.clear()


class Liveness:
    """The watches of one IOLoop (one Panel server process), with their periodic sweep.

    ``end``, ``on_disconnect``, ``on_reconnect`` and ``cull`` are the integration's hooks.
    """

    def __init__(
        self,
        config: LivenessConfig,
        loop: IOLoop,
        *,
        end: EndSession,
        on_disconnect: Callable[[str], None],
        on_reconnect: Callable[[str], None],
        cull: Callable[[Watch, datetime], str | None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.loop = loop
        self.end = end
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self.cull = cull
        self.clock = clock
        self.watches: dict[str, Watch] = {}
        self._sweeper = PeriodicCallback(self.sweep, config.sweep_interval_s * 1000)
        self._last_sweep: float | None = None

    def watch(self, session_id: str, session: Any, on_first_connect: Callable[[], None]) -> Watch:
        old = self.watches.pop(session_id, None)
        if old is not None:
            old.close()
        watch = Watch(self, session_id, session, on_first_connect)
        self.watches[session_id] = watch
        if not self._sweeper.is_running():
            self._sweeper.start()
            # The first sweep is due one interval from now: a loop blocked before it is late from here on.
            self._last_sweep = self.clock()
        return watch

    def forget(self, session_id: str) -> None:
        watch = self.watches.pop(session_id, None)
        if watch is not None:
            watch.close()

    def sweep(self) -> None:
        """One pass: pings and dead sockets, then idle culling (one failing session does not stop the rest).

        Silence is counted on the loop's healthy time: a sweep that runs late ran late because the loop was
        blocked (a callback that did not return, a stall) or the process suspended. Meanwhile no pong could be
        read and no ping sent, so the lateness is taken off every websocket's silence: a callback blocking
        for longer than ``dead_socket_s`` ends no session.
        """
        now, now_utc = self.clock(), datetime.now(UTC)
        if self._last_sweep is not None:
            late_s = now - self._last_sweep - self.config.sweep_interval_s
            if late_s > 0:
                if late_s >= 1.0:
                    logger.info("liveness: the loop was blocked for %.1f s; not counted as websocket silence", late_s)
                for watch in list(self.watches.values()):
                    watch.forgive(late_s, now)
        self._last_sweep = now
        for session_id, watch in list(self.watches.items()):
            try:
                watch.sweep(now)
                if watch.connected_once:
                    message = self.cull(watch, now_utc)
                    if message is not None:
                        self.forget(session_id)
                        self.end(session_id, "expired", message)
            except Exception:
                logger.exception("session %s: liveness check failed", session_id)

    def stop(self) -> None:
        self._sweeper.stop()
        for session_id in list(self.watches):
            self.forget(session_id)
