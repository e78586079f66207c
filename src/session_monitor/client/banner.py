"""Persistent banners in a live session's page: announcements, and countdowns to a session's end.

The one piece every notice to a page's user goes through (announcements, kills with notice, draining).
A :class:`Banner` is plain data; :func:`show` and :func:`remove` may be called from any thread (the agent's)
and only queue the change on the session's IOLoop (``doc.add_next_tick_callback``, thread-safe); :func:`apply`
and :func:`clear` are their on-loop halves. Nothing here does network I/O.

In the page, one :class:`PageBanner` per document, added as a root with the browser component (``browser.py``)
when the page's first websocket connects (:func:`prepare`; or with the first banner, if that comes sooner). Like
it, a host of no size with ``display: none``: it takes no room in any layout or template. Its script puts the
banners in a box of its own fixed at the top of the window (in a shadow root: the page's CSS does not reach it,
and ours does not leak), written with ``textContent`` (text, never HTML). A countdown is sent once, as an
absolute deadline with the server's clock at sending; the page computes the time left every second from its own
clock (corrected by the difference seen at sending), with no further server traffic. A banner with
``expires_at`` is taken away by the page at that time.
"""

from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Literal

import param
from bokeh.document import Document
from panel.custom import JSComponent
from panel.io.state import set_curdoc

logger = logging.getLogger(__name__)

Level = Literal["info", "warning", "error"]
LEVELS: tuple[str, ...] = ("info", "warning", "error")

ROOT_NAME = "session_monitor_banner"
"""Name of the banner component's root in the document."""

COUNTDOWN_LEAD = "This session ends in"
"""What a countdown says before the time left: ``This session ends in 4:59: <message>``."""


@dataclass(frozen=True, slots=True)
class Banner:
    """One banner of a page, identified by ``key`` (showing a banner with the same key replaces it).

    Args:
        key: Identifies the banner in its page, e.g. ``"announcement:12"``, ``"kill"``, ``"drain"``.
        message: Plain text (shown as text, never as HTML).
        level: ``info``, ``warning`` or ``error`` (the colour; ``warning`` and ``error`` are ARIA alerts).
        deadline: For a countdown: the time it counts down to (timezone-aware). The banner then reads
            ``f"{lead} M:SS: {message}"`` (``f"{lead} M:SS."`` without a message), ticking every second.
        lead: The words before the time left of a countdown.
        expires_at: The page takes the banner away at this time (timezone-aware), with no server traffic.
        dismissible: The user may hide it (a close button); countdowns are not, by default.
    """

    key: str
    message: str
    level: Level = "info"
    deadline: datetime | None = None
    lead: str = COUNTDOWN_LEAD
    expires_at: datetime | None = None
    dismissible: bool = False

    def wire(self) -> dict[str, Any]:
        """What the page receives (times as epoch milliseconds)."""
        return {
            "key": self.key,
            "message": self.message,
            "level": self.level if self.level in LEVELS else "info",
            "deadline_ms": _epoch_ms(self.deadline),
            "lead": self.lead,
            "expires_ms": _epoch_ms(self.expires_at),
            "dismissible": self.dismissible,
        }


def _epoch_ms(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp() * 1000.0


class PageBanner(JSComponent):
    """The page's banners (a list of :meth:`Banner.wire` dicts) and the server's clock when they were set."""

    banners = param.List(default=[], doc="The banners shown, countdowns first.")
    server_ms = param.Number(default=0.0, doc="The server's clock (epoch ms) when `banners` was set.")

    _esm = """
const STYLE = `
:host { all: initial; }
.box { position: fixed; top: 0; left: 0; right: 0; z-index: 2147483000; pointer-events: none;
  display: flex; flex-direction: column; align-items: center; gap: 4px; padding: 6px 8px 0;
  font: 14px/1.35 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.banner { pointer-events: auto; box-sizing: border-box; max-width: min(960px, 100%); display: flex;
  align-items: flex-start; gap: 10px; padding: 7px 12px; border-radius: 6px; border: 1px solid;
  box-shadow: 0 2px 8px rgba(0, 0, 0, 0.18); white-space: pre-wrap; overflow-wrap: anywhere; }
.info { background: #e8f1fb; border-color: #7aa7d9; color: #0b3a66; }
.warning { background: #fff4d6; border-color: #e0b339; color: #5c4200; }
.error { background: #fde8e8; border-color: #d97a7a; color: #6b0d0d; }
.text { flex: 1 1 auto; }
.close { all: unset; cursor: pointer; font-size: 16px; line-height: 1; padding: 0 2px; opacity: 0.7; }
.close:hover { opacity: 1; }
`

function left(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000))
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60
  const mm = h > 0 ? `${h}:${String(m).padStart(2, "0")}` : String(m)
  return `${mm}:${String(s).padStart(2, "0")}`
}

export function render({ model, el }) {
  el.style.display = "none"
  const host = document.createElement("div")
  host.className = "sm-banners"
  const shadow = host.attachShadow({ mode: "open" })
  const style = document.createElement("style")
  style.textContent = STYLE
  const box = document.createElement("div")
  box.className = "box"
  box.setAttribute("role", "region")
  box.setAttribute("aria-label", "Notices")
  shadow.append(style, box)
  document.body.appendChild(host)
  const dismissed = new Set()
  let skew = 0
  let timer = null
  let shown = []

  const text = (b, now) => b.deadline_ms == null ? b.message
    : `${b.lead} ${left(b.deadline_ms - now)}${b.message ? ": " + b.message : "."}`

  const tick = () => {
    timer = null
    const now = Date.now() + skew
    let next = Infinity
    for (const item of shown) {
      const b = item.banner
      if (b.expires_ms != null && now >= b.expires_ms) {
        item.node.remove()
        continue
      }
      if (b.expires_ms != null) { next = Math.min(next, b.expires_ms - now) }
      if (b.deadline_ms != null) {
        item.label.textContent = text(b, now)
        const ms = b.deadline_ms - now
        if (ms > 0) { next = Math.min(next, ms % 1000 || 1000) }
      }
    }
    shown = shown.filter((item) => item.node.isConnected)
    if (next !== Infinity) { timer = setTimeout(tick, Math.max(20, next + 5)) }
  }

  const build = () => {
    if (timer != null) { clearTimeout(timer); timer = null }
    skew = model.server_ms ? model.server_ms - Date.now() : 0
    box.replaceChildren()
    shown = []
    for (const b of model.banners) {
      const id = `${b.key}\\u0000${b.message}`
      if (dismissed.has(id)) { continue }
      const node = document.createElement("div")
      node.className = `banner ${b.level}`
      node.dataset.key = b.key
      node.setAttribute("role", b.level === "info" ? "status" : "alert")
      const label = document.createElement("span")
      label.className = "text"
      node.append(label)
      if (b.dismissible) {
        const close = document.createElement("button")
        close.className = "close"
        close.type = "button"
        close.textContent = "\\u00d7"
        close.title = "Hide"
        close.setAttribute("aria-label", "Hide this notice")
        close.addEventListener("click", () => { dismissed.add(id); node.remove() })
        node.append(close)
      }
      label.textContent = text(b, Date.now() + skew)
      box.append(node)
      shown.push({ banner: b, node, label })
    }
    tick()
  }

  model.on(["banners", "server_ms"], build)
  model.on("remove", () => { if (timer != null) { clearTimeout(timer) } host.remove() })
  build()
}
"""
    _stylesheets = [":host { display: none !important; }"]


_components: weakref.WeakKeyDictionary[Document, PageBanner] = weakref.WeakKeyDictionary()
"""The banner component of each document that has shown one (used on its IOLoop only)."""


def _add_component(doc: Document, banners: list[dict[str, Any]]) -> None:
    """The document's banner component, made with its first banners (with Panel's current document set).

    Made with them, not changed right after: Panel sends a change of a model made in the same callback ahead of
    the model itself, and the page drops it."""
    component = PageBanner(  # type: ignore[no-untyped-call]
        banners=banners, server_ms=time.time() * 1000.0, width=0, height=0, margin=0, sizing_mode="fixed",
        name=ROOT_NAME, css_classes=["sm-banner"],
    )  # fmt: skip
    model = component.get_root(doc)
    model.name = ROOT_NAME
    doc.add_root(model)
    _components[doc] = component


def _ordered(banners: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Countdowns first (soonest first), then the others in the order they came."""
    countdowns = sorted((b for b in banners if b["deadline_ms"] is not None), key=lambda b: b["deadline_ms"])
    return countdowns + [b for b in banners if b["deadline_ms"] is None]


def prepare(doc: Document) -> None:
    """On the document's IOLoop: add the (empty) banner component now, if the page has none yet.

    The Panel binding calls it when a page's first websocket connects: a later banner is then one change of a
    model the page already has, not a new model (its script compiled and run in every page at once: 3 s for the
    first announcement to 50 pages against 0.5 s for the next)."""
    if doc not in _components:
        with set_curdoc(doc):
            _add_component(doc, [])


def apply(doc: Document, banner: Banner) -> None:
    """On the document's IOLoop: show ``banner`` in its page (replacing the one with its key)."""
    component = _components.get(doc)
    with set_curdoc(doc):
        if component is None:
            _add_component(doc, [banner.wire()])
            return
        kept = [b for b in component.banners if b["key"] != banner.key]
        component.param.update(banners=_ordered([*kept, banner.wire()]), server_ms=time.time() * 1000.0)


def clear(doc: Document, key: str) -> None:
    """On the document's IOLoop: take the banner ``key`` away (nothing if it is not shown)."""
    component = _components.get(doc)
    if component is None or not any(b["key"] == key for b in component.banners):
        return
    with set_curdoc(doc):
        component.param.update(
            banners=[b for b in component.banners if b["key"] != key], server_ms=time.time() * 1000.0
        )


def clear_all(doc: Document) -> None:
    """On the document's IOLoop: take every banner away (the session ends: its closing notice says why)."""
    component = _components.get(doc)
    if component is not None and component.banners:
        with set_curdoc(doc):
            component.param.update(banners=[], server_ms=time.time() * 1000.0)


def shown(doc: Document) -> list[dict[str, Any]]:
    """On the document's IOLoop: the banners its page shows (as :meth:`Banner.wire` dicts)."""
    component = _components.get(doc)
    return [] if component is None else list(component.banners)


def _guarded(fn: Any, doc: Document, arg: Any) -> None:
    if doc.session_context is None:
        return  # the session went meanwhile
    try:
        fn(doc, arg)
    except Exception:
        logger.exception("could not update the page's banners")


def show(doc: Document, banner: Banner) -> bool:
    """From any thread: queue :func:`apply` on the document's IOLoop; ``False`` if the session is gone."""
    if doc.session_context is None:
        return False
    doc.add_next_tick_callback(partial(_guarded, apply, doc, banner))
    return True


def remove(doc: Document, key: str) -> bool:
    """From any thread: queue :func:`clear` on the document's IOLoop; ``False`` if the session is gone."""
    if doc.session_context is None:
        return False
    doc.add_next_tick_callback(partial(_guarded, clear, doc, key))
    return True
