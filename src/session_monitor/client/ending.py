"""How a session's page ends: one notice with the reason, no reconnect, websockets closed, session destroyed.

Run on the session's own IOLoop by the Panel binding (``panel.py``) when a kill, an expiry or a lost browser
ends a session.
"""

from __future__ import annotations

import asyncio
import html
import logging
from typing import Any

import panel as pn
from bokeh.document import Document
from panel.io.state import set_curdoc

from session_monitor.client.browser import mark_ended

logger = logging.getLogger("session_monitor.client.panel")

WEBSOCKET_CLOSE_WAIT_S = 6.0
"""How long a kill waits for the browser to finish closing before discarding the session anyway."""


def enable_notice() -> None:
    """Let this session show why it was killed, even if the app did not enable notifications.

    Set while the session is being built, Panel's config applies to this session only. Panel's own
    ``disconnect_notification`` ("Server connection lost." unless the app changed it) shows when the
    websocket is lost; a kill or an expiry puts its reason in its place (:func:`notify`).
    """
    try:
        if not pn.config.notifications:
            # Also loads the notification area's JavaScript into this session's page.
            pn.extension("notifications", notifications=True)
    except Exception:
        logger.debug("could not enable notifications for this session", exc_info=True)


def notify(doc: Document, message: str) -> None:
    """Tell the user why, once, as the socket closes (as text, never HTML), and let the page stay closed.

    Panel's notification area shows its ``disconnect_notification`` ("Server connection lost.") when
    the websocket closes: this session's area shows ``message`` in its place, so the page gets one
    notice, with the reason. The page is told not to reconnect (``reconnect=True`` would rebuild the
    session only for it to be ended again); the browser component then greys the page.
    """
    try:
        # Bokeh sets curdoc only while a coroutine callback is created, not while it runs: set it for Panel.
        with set_curdoc(doc):
            notifications = pn.state.notifications
            if notifications is not None:
                # Notyf writes the message as HTML: escaped, it shows as the text it is.
                lost = {"type": "error", "message": html.escape(message)}
                notifications.js_events = {**notifications.js_events, "connection_lost": lost}
                area = getattr(notifications, "_documents", {}).get(doc)  # its model in this document
                if area is not None:
                    area.tags = []  # "prompt" would offer a manual reconnect under the notice
            mark_ended(doc)
    except Exception:
        logger.debug("could not set the session's closing notice", exc_info=True)


async def discard(context: Any, session_id: str, message: str) -> None:
    """Close the session's websockets once the notice is written, then destroy the Bokeh session now.

    Its ``on_session_destroyed`` hooks run, including ours.
    """
    session = getattr(context, "_session", None)
    if session is not None:
        # Waiting for the document lock waits until the kill callback's changes have been sent.
        await session.with_document_locked(lambda: None)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WEBSOCKET_CLOSE_WAIT_S
    while session is not None and session.connection_count > 0 and loop.time() < deadline:
        # Every pass: a page with reconnect=True may re-attach to the session before it is discarded.
        close_connections(session, message)
        await asyncio.sleep(0.02)
    server_context = getattr(context, "_server_context", None)
    app_context = getattr(server_context, "application_context", None)
    try:
        if session is not None and app_context is not None and session.id in app_context._sessions:
            close_connections(session, message)
            for connection in list(session._subscribed_connections):  # a browser that never answered the close
                session.unsubscribe(connection)
            await app_context._discard_session(session, lambda _: True)
    except Exception:
        logger.exception("session %s: could not be discarded", session_id)


def close_connections(session: Any, message: str) -> None:
    """Close each websocket of the session with code 1001 and the kill message (closing twice is a no-op)."""
    for connection in list(session._subscribed_connections):
        socket = getattr(connection, "_socket", None)
        if socket is not None:
            # A close reason is at most 123 bytes.
            socket.close(1001, message.encode()[:120].decode(errors="ignore"))
