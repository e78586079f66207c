"""The Panel side of shared-config watchers: run on the session's IOLoop with its document, end with it.

Every callback handed to Bokeh is defined here, in an imported module (Panel clears the served script's
globals before ``on_session_destroyed`` runs).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from functools import partial
from typing import Any

import panel as pn
from bokeh.document import Document
from panel.io.state import set_curdoc

from session_monitor.client.config_cache import Scheduler

logger = logging.getLogger(__name__)


def _run_in_doc(doc_ref: weakref.ref[Document], fn: Callable[[], None]) -> None:
    doc = doc_ref()
    if doc is None:
        return
    with set_curdoc(doc):  # Bokeh sets curdoc only while a coroutine callback is created, not while it runs
        fn()


def _session_ended(ends: list[Callable[[], None]], _session_context: Any) -> None:
    for end in ends:
        try:
            end()
        except Exception:
            logger.exception("forgetting a config watcher failed")
    ends.clear()


def session_scheduler() -> tuple[Scheduler, Callable[[Callable[[], None]], None]] | None:
    """The current Panel session's scheduler and end hook, or ``None`` outside a session."""
    try:
        doc = pn.state.curdoc
        context = doc.session_context if doc is not None else None
    except Exception:
        return None
    if doc is None or context is None:
        return None
    doc_ref = weakref.ref(doc)
    ends: list[Callable[[], None]] = []
    doc.on_session_destroyed(partial(_session_ended, ends))

    def schedule(fn: Callable[[], None]) -> bool:
        current = doc_ref()
        if current is None or current.session_context is None or getattr(current.session_context, "_destroyed", False):
            return False
        try:
            current.add_next_tick_callback(partial(_run_in_doc, doc_ref, fn))
        except Exception:
            logger.debug("session gone: config watcher dropped", exc_info=True)
            return False
        return True

    return schedule, ends.append
