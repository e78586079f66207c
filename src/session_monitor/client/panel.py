"""Panel integration: finding the current session, ending it, and killing it on its own IOLoop.

The only client module that imports panel, bokeh or tornado. Every callback
handed to Panel is defined here, in an imported module: Panel clears the
served script's globals before ``on_session_destroyed`` runs.

A kill, applied with ``doc.add_next_tick_callback`` on the session's IOLoop:
every ``on_kill`` callback once (awaited if async; one raising does not stop
the others), a notification with the reason, each websocket closed with code
1001 and the reason, then the session discarded at once through Bokeh's
application context, so its ``on_session_destroyed`` hooks run now instead of
15-32 s later.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import weakref
from functools import partial
from typing import TYPE_CHECKING, Any

import panel as pn
from bokeh.document import Document
from panel.io.state import set_curdoc
from tornado.ioloop import IOLoop

from session_monitor.client import threads
from session_monitor.client.agent import current_agent

if TYPE_CHECKING:
    from session_monitor.client.tracker import SessionClient

logger = logging.getLogger(__name__)

DEFAULT_KILL_MESSAGE = "This session was ended by an administrator."
"""Shown to the user when a kill gives no reason."""

WEBSOCKET_CLOSE_WAIT_S = 6.0
"""How long a kill waits for the browser to finish closing before discarding the session anyway."""

_docs: weakref.WeakValueDictionary[str, Document] = weakref.WeakValueDictionary()
_docs_lock = threading.Lock()


def session_key() -> str | None:
    """The id of the Panel session whose code runs on this thread, if any (remembering its document)."""
    try:
        doc = pn.state.curdoc
        context = doc.session_context if doc is not None else None
    except Exception:
        return None
    if context is None or doc is None:
        return None
    session_id = str(context.id)
    if session_id not in _docs:
        with _docs_lock:
            _docs[session_id] = doc
    return session_id


threads.add_finder(session_key)


def kill_message(reason: str | None) -> str:
    return f"This session was ended by an administrator: {reason}" if reason else DEFAULT_KILL_MESSAGE


class PanelBinding:
    """Ties a tracker to its Panel document: session end and kills go through Panel."""

    def __init__(self, tracker: SessionClient, doc: Document) -> None:
        self._tracker = weakref.ref(tracker)
        self._doc = weakref.ref(doc)
        self.session_id = tracker.session_id

    def schedule_kill(self, reason: str | None) -> bool:
        """Queue the kill on the session's IOLoop; ``False`` if the document is gone."""
        doc = self._doc()
        if doc is None or doc.session_context is None:
            return False
        doc.add_next_tick_callback(partial(_kill_session, self.session_id, reason))  # type: ignore[arg-type]
        return True


def bind(tracker: SessionClient) -> PanelBinding | None:
    """Attach ``tracker`` to its session's document (found from the current thread or remembered)."""
    doc = _docs.get(tracker.session_id)
    if doc is None:
        return None
    doc.on_session_destroyed(_session_destroyed)
    _enable_kill_notice()
    binding = PanelBinding(tracker, doc)
    tracker._binding = binding
    agent = current_agent()
    if agent is not None and agent.was_killed(tracker.session_id):
        # A killed session reconnecting under its old id (reconnect=True) is refused again.
        tracker._kill_requested("this session was killed; reconnecting is refused")
    return binding


def _enable_kill_notice() -> None:
    """Let this session show why it was killed, even if the app did not enable notifications.

    Set while the session is being built, Panel's config applies to this session only; Panel's own
    ``disconnect_notification`` ("Server connection lost." unless the app changed it) then shows too.
    """
    try:
        if not pn.config.notifications:
            # Also loads the notification area's JavaScript into this session's page.
            pn.extension("notifications", notifications=True)
    except Exception:
        logger.debug("could not enable notifications for this session", exc_info=True)


def _session_destroyed(session_context: Any) -> None:
    """Panel destroyed the session (tab closed long ago, or our own kill): end it as ``closed``."""
    from session_monitor.client.tracker import SessionClient

    session_id = str(session_context.id)
    with _docs_lock:
        _docs.pop(session_id, None)
    tracker = SessionClient.for_session(session_id)
    if tracker is not None:
        tracker._finish("closed")


async def _kill_session(session_id: str, reason: str | None) -> None:
    """On the session's IOLoop, with its document locked: callbacks, notice, close, then discard."""
    from session_monitor.client.tracker import SessionClient

    tracker = SessionClient.for_session(session_id)
    if tracker is not None:
        for callback in tracker.take_callbacks():
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("session %s: on_kill callback %r failed", session_id, callback)
    doc = _docs.get(session_id)
    context = doc.session_context if doc is not None else None
    if doc is None or context is None:
        if tracker is not None:
            tracker._finish("killed", run=False)
        return
    message = kill_message(reason)
    _notify(doc, message)
    # Bokeh writes this callback's changes (the notice) only after it returns, still holding the document
    # lock: closing the sockets here would drop them. Close, then discard, from a callback that waits for it.
    IOLoop.current().add_callback(_discard, context, session_id, message)


def _notify(doc: Document, message: str) -> None:
    """Tell the user why, in the page, before the socket closes (as text, never HTML)."""
    try:
        # Bokeh sets curdoc only while a coroutine callback is created, not while it runs: set it for Panel.
        with set_curdoc(doc):
            notifications = pn.state.notifications
            if notifications is None:
                return
            notifications.error(message, duration=0)  # type: ignore[no-untyped-call]
    except Exception:
        logger.debug("could not show the kill notification", exc_info=True)


async def _discard(context: Any, session_id: str, message: str) -> None:
    """Close the session's websockets once the notice is written, then destroy the Bokeh session now.

    Its ``on_session_destroyed`` hooks run, including ours.
    """
    from session_monitor.client.tracker import SessionClient

    session = getattr(context, "_session", None)
    if session is not None:
        # Waiting for the document lock waits until the kill callback's changes have been sent.
        await session.with_document_locked(lambda: None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WEBSOCKET_CLOSE_WAIT_S
    while session is not None and session.connection_count > 0 and loop.time() < deadline:
        # Every pass: a page with reconnect=True may re-attach to the session before it is discarded.
        _close_connections(session, message)
        await asyncio.sleep(0.02)
    server_context = getattr(context, "_server_context", None)
    app_context = getattr(server_context, "application_context", None)
    try:
        if session is not None and app_context is not None and session.id in app_context._sessions:
            _close_connections(session, message)
            for connection in list(session._subscribed_connections):  # a browser that never answered the close
                session.unsubscribe(connection)
            await app_context._discard_session(session, lambda _: True)
    except Exception:
        logger.exception("session %s: could not be discarded", session_id)
    tracker = SessionClient.for_session(session_id)
    if tracker is not None:  # the destroy hooks did not end it (e.g. discard failed)
        tracker._finish("killed", run=False)


def _close_connections(session: Any, message: str) -> None:
    """Close each websocket of the session with code 1001 and the kill message (closing twice is a no-op)."""
    for connection in list(session._subscribed_connections):
        socket = getattr(connection, "_socket", None)
        if socket is not None:
            # A close reason is at most 123 bytes.
            socket.close(1001, message.encode()[:120].decode(errors="ignore"))
