"""SIGTERM of ``panel serve``: every open page is told "this server is restarting" before its socket closes.

``exiting.py`` runs :func:`tell_pages` on the main thread's IOLoop when SIGTERM arrives (instead of exiting
at once); once each page has its notice (written with the session's document locked, so it is sent before
the lock is let go) and its websockets were closed with code 1001 and the message, the process exits
through its exit hooks as before (sessions end as ``process_exit``). This module never imports ``panel.py``:
the binding hands in its documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bokeh.document import Document

from session_monitor import defaults
from session_monitor.client import ending, exiting

logger = logging.getLogger("session_monitor.client.panel")

CLOSE_WAIT_S = 1.0
"""How long the sockets are given to close once the notice was sent."""


async def _tell(docs: list[Document], message: str) -> None:
    sessions = []
    for doc in docs:
        session = getattr(doc.session_context, "_session", None)
        if session is None:
            continue
        try:
            # Run with the document locked, and wait until its changes were written to the sockets.
            await session.with_document_locked(ending.notify, doc, message)
        except Exception:
            logger.debug("could not tell a page the server is restarting", exc_info=True)
            continue
        sessions.append(session)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CLOSE_WAIT_S
    for session in sessions:
        ending.close_connections(session, message)
    while any(s.connection_count > 0 for s in sessions) and loop.time() < deadline:
        await asyncio.sleep(0.02)


def tell_pages(docs: Callable[[], list[Document]], done: Callable[[], None]) -> None:
    """On the main IOLoop: tell every page of ``docs()`` the server restarts, then call ``done``."""
    found = [doc for doc in docs() if doc.session_context is not None]
    logger.info("SIGTERM: telling %d page(s) the server is restarting", len(found))

    async def run() -> None:
        try:
            await _tell(found, defaults.RESTART_MESSAGE)
        finally:
            done()

    asyncio.ensure_future(run())


def arm() -> None:
    """On the sessions' IOLoop: put the notice in front of Bokeh's own SIGTERM handler (``panel serve`` sets one
    on the loop, which stops it at once)."""
    with contextlib.suppress(RuntimeError):  # no running loop
        exiting.take_over_loop_sigterm(asyncio.get_running_loop())
