# mypy: disable-error-code="no-untyped-call"
# Panel's notification area is untyped (param-based).
"""Client text made safe for HTML and for the eye, and notifications that only ever carry escaped text.

App names, users, tasks and statuses come from whoever can register a session: every place that renders HTML
(confirmations, outcomes, notifications, the summary line) gets them through :func:`escaped`. Tables use
Tabulator's ``plaintext`` formatter, which escapes; plots draw text on a canvas.

Invisible format characters could still make one app's name read like another's (U+202E turns the rest of a
name right to left): every dashboard rendering of client text goes through :func:`visible_controls`, which
shows them as ``⟨U+202E⟩``. It is one-to-one (a literal ``⟨`` is shown as ``⟨U+27E8⟩`` too), so
:func:`from_visible` gives back the name to send to the API (Kill all).
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from typing import Any

logger = logging.getLogger(__name__)

NOTIFY_ERROR_MS = 0
"""Errors stay until dismissed (0 = no timeout)."""

NOTIFY_INFO_MS = 5000


KEPT_FORMAT_CHARS = frozenset("\u200c\u200d")
"""Format characters shown as they are: zero-width (non-)joiners belong to ordinary writing (emoji sequences,
Persian and Indic names) and cannot reorder text."""

MARK_OPEN = "\u27e8"
_MARKED = re.compile(r"\u27e8U\+([0-9A-F]{4,6})\u27e9")


def _shown_as_code(ch: str) -> bool:
    if ch == MARK_OPEN:
        return True
    # Cf: format characters, the bidi controls U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C among them,
    # and invisible ones (U+200B, U+2060, U+FEFF, U+00AD); Zl/Zp: line and paragraph separators.
    return unicodedata.category(ch) in ("Cf", "Zl", "Zp") and ch not in KEPT_FORMAT_CHARS


def visible_controls(value: str) -> str:
    """``value`` with every bidi control and other invisible format character shown as ``⟨U+202E⟩``."""
    if value.isascii():
        return value
    return "".join(f"\u27e8U+{ord(ch):04X}\u27e9" if _shown_as_code(ch) else ch for ch in value)


def from_visible(shown: str) -> str:
    """The text :func:`visible_controls` made ``shown`` from."""
    return _MARKED.sub(lambda m: chr(int(m.group(1), 16)), shown) if MARK_OPEN in shown else shown


def escaped(value: Any) -> str:
    """``value`` as text for HTML: ``<``, ``>``, ``&`` and both quotes escaped."""
    return html.escape("" if value is None else str(value), quote=True)


def notify(message_html: str, *, error: bool = False) -> None:
    """A toast with ``message_html``, which must already be escaped (the toast renders HTML)."""
    import panel as pn  # here, so that the row model (no Panel) can use this module's pure functions

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
