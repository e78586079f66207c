# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""Client text made safe for HTML, and notifications that only ever carry escaped text.

App names, users, tasks and statuses come from whoever can register a session: every place that renders HTML
(confirmations, outcomes, notifications, the summary line) gets them through :func:`escaped`. Tables use
Tabulator's ``plaintext`` formatter, which escapes; plots draw text on a canvas.
"""

from __future__ import annotations

import html
import logging
from typing import Any

import panel as pn

logger = logging.getLogger(__name__)

NOTIFY_ERROR_MS = 0
"""Errors stay until dismissed (0 = no timeout)."""

NOTIFY_INFO_MS = 5000


def escaped(value: Any) -> str:
    """``value`` as text for HTML: ``<``, ``>``, ``&`` and both quotes escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def notify(message_html: str, *, error: bool = False) -> None:
    """A toast with ``message_html``, which must already be escaped (the toast renders HTML)."""
    area = pn.state.notifications
    if area is None:
        return
    try:
        if error:
            area.error(message_html, duration=NOTIFY_ERROR_MS)
        else:
            area.success(message_html, duration=NOTIFY_INFO_MS)
    except Exception:  # a toast is a courtesy: the outcome line shows the same message
        logger.debug("could not show a notification", exc_info=True)
