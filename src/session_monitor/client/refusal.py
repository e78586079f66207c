"""The page a session over a limit gets instead of the app, put in before the app's own code runs where possible.

A session tracked from Panel's ``on_session_created`` (``--setup`` tracking) is checked there, before Bokeh
builds its document: Panel's ``Application.initialize_document`` (wrapped once per process, :func:`install`)
then puts in this page and never runs the app's code. A session whose tracker the app makes itself (its
code is running) or that goes over a limit only by the time its websocket connects (sessions opened at
once) gets the page in place of the app's content when it connects (``panel.py``'s ``_first_connect``).
The message is text, never HTML.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from functools import wraps
from typing import Any

from bokeh.document import Document
from bokeh.models.widgets.markups import Div

logger = logging.getLogger("session_monitor.client.panel")

PAGE_TITLE = "Session refused"
MAX_PENDING = 10_000
"""Refusals decided at creation and not yet carried out that are remembered (oldest dropped)."""

_lock = threading.Lock()
_pending: OrderedDict[str, str] = OrderedDict()
"""Session id -> the message, for sessions refused when they were created."""
_shown: set[str] = set()
"""Session ids whose document is the refusal page (the app's code never ran)."""
_installed = False

_STYLE: dict[str, str | None] = {
    "font-family": "system-ui, sans-serif",
    "font-size": "1.25rem",
    "line-height": "1.5",
    "max-width": "40rem",
    "margin": "4rem auto",
    "padding": "1.5rem 2rem",
    "border-left": "6px solid #d97706",
    "background": "#fffbeb",
    "color": "#1f2937",
}


def page(message: str) -> Div:
    """The refusal as one text block (``render_as_text``: never parsed as HTML)."""
    return Div(text=message, render_as_text=True, styles=_STYLE, name="session-monitor-refusal")


def mark(session_id: str, message: str) -> None:
    """Refuse this session: its document gets the page, and it ends as ``refused`` when it connects."""
    with _lock:
        _pending[session_id] = message
        while len(_pending) > MAX_PENDING:
            _pending.popitem(last=False)


def pending(session_id: str) -> str | None:
    with _lock:
        return _pending.get(session_id)


def shown(session_id: str) -> bool:
    with _lock:
        return session_id in _shown


def forget(session_id: str) -> None:
    with _lock:
        _pending.pop(session_id, None)
        _shown.discard(session_id)


def show(doc: Document, message: str) -> None:
    """Replace the document's content with the page (on the session's loop, or before it has one)."""
    doc.clear()
    doc.title = PAGE_TITLE
    doc.add_root(page(message))


def _document_refusal(doc: Document) -> tuple[str, str] | None:
    context = doc.session_context
    if context is None:
        return None
    session_id = str(context.id)
    message = pending(session_id)
    return None if message is None else (session_id, message)


def install() -> None:
    """Wrap Panel's ``Application.initialize_document`` (once per process): a refused session skips the app."""
    global _installed
    if _installed:
        return
    _installed = True
    from panel.io.application import Application

    original = Application.initialize_document

    @wraps(original)
    def initialize_document(self: Any, doc: Document) -> None:
        refused = _document_refusal(doc)
        if refused is None:
            original(self, doc)  # type: ignore[no-untyped-call]
            return
        session_id, message = refused
        logger.info("session %s refused before the app ran: %s", session_id, message)
        show(doc, message)
        with _lock:
            _shown.add(session_id)

    Application.initialize_document = initialize_document  # type: ignore[method-assign]
