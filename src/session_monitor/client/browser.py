"""The page side of liveness: a hidden Panel component reporting visibility and the user's last interaction.

Added by the Panel integration to every tracked page (the app does nothing). It
only *reports*: a hidden or frozen tab runs no timers (see DESIGN.md, "Facts
measured"), so nothing here may end a session; the websocket and its pongs
decide liveness, this component feeds the dashboard and idle culling.

It also shows, in the page, that the session is gone: when Bokeh's client gives up the
websocket for good (its ``connection_lost`` event with no further attempt planned, as after
a kill, which turns reconnection off), every control of the page is disabled and the page
greyed under the notice; a reconnection (Panel's ``reconnect=True``) undoes it. This runs on
the browser's own event, with no server traffic.

The component is a root of the document with no size and ``display: none``: it
takes no room in any layout or template, and its ``render`` still runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import param
from panel.custom import JSComponent
from panel.io.state import state

logger = logging.getLogger(__name__)

INTERACTION_REPORT_S = 5
"""The page reports interactions at most this often: ``last_interaction_at`` is exact to this many seconds."""

ROOT_NAME = "session_monitor_browser"
"""Name of the component's root in the document (templates that embed roots by name ignore it)."""


class BrowserActivity(JSComponent):
    """Reports ``document.visibilityState`` and a count of user interactions (pointer, key, wheel, touch).

    Each report is one small websocket message: visibility on every change, interactions at most
    once every :data:`INTERACTION_REPORT_S` seconds.
    """

    visibility = param.String(default=None, allow_None=True, doc="'visible' or 'hidden', as the page reports it.")
    interactions = param.Integer(default=0, doc="Interactions reported so far (one per report period at most).")
    report_ms = param.Integer(default=INTERACTION_REPORT_S * 1000, doc="Shortest time between two reports.")
    ended = param.Boolean(
        default=False, doc="Set by the server just before it closes the session for good: the page does not reconnect."
    )

    _esm = """
export function render({ model, el, view }) {
  el.style.display = "none"
  let last = 0
  const visibility = () => {
    const state = document.visibilityState === "hidden" ? "hidden" : "visible"
    if (model.visibility !== state) { model.visibility = state }
  }
  const interacted = () => {
    const now = Date.now()
    if (now - last >= model.report_ms) { last = now; model.interactions = model.interactions + 1 }
  }
  const kinds = ["pointerdown", "pointermove", "keydown", "wheel", "touchstart"]
  document.addEventListener("visibilitychange", visibility)
  for (const kind of kinds) { window.addEventListener(kind, interacted, { capture: true, passive: true }) }
  const ended = sessionEnded()
  const doc = view.model.document
  // Bokeh reads this when the websocket closes: a session ended by the server is not reconnected to.
  const stayClosed = () => { if (model.ended && doc != null) { doc.config.reconnect_session = false } }
  model.on("ended", stayClosed)
  stayClosed()
  if (doc != null) {
    doc.on_event("connection_lost", (_, event) => { if (event.timeout == null) { ended.show() } })
    doc.on_event("client_reconnected", () => ended.hide())
  }
  model.on("remove", () => {
    document.removeEventListener("visibilitychange", visibility)
    for (const kind of kinds) { window.removeEventListener(kind, interacted, { capture: true }) }
    ended.hide()
  })
  visibility()
  el.classList.add("sm-browser-ready")  // the handlers are on (the host's sm-browser class comes before this runs)
}

const CONTROLS = "input, button, select, textarea"

// Every element of the page, through the shadow roots Panel renders into.
function* elements(root) {
  for (const element of root.querySelectorAll("*")) {
    yield element
    if (element.shadowRoot) { yield* elements(element.shadowRoot) }
  }
}

// The page's look once its session is gone: controls disabled, a grey veil under the notices.
function sessionEnded() {
  let veil = null
  const disabled = []
  return {
    show() {
      if (veil != null) { return }
      veil = document.createElement("div")
      veil.className = "sm-session-ended"
      veil.title = "This session has ended."
      Object.assign(veil.style, {
        position: "fixed", inset: "0", zIndex: "9998", cursor: "not-allowed",
        background: "rgba(246, 246, 246, 0.6)", backdropFilter: "grayscale(1)",
      })
      document.body.appendChild(veil)
      document.documentElement.classList.add("sm-session-ended")
      for (const element of elements(document)) {
        if (element.matches(CONTROLS) && !element.disabled && element.closest(".notyf") == null) {
          element.disabled = true
          disabled.push(element)
        }
      }
    },
    hide() {
      if (veil == null) { return }
      veil.remove()
      veil = null
      document.documentElement.classList.remove("sm-session-ended")
      for (const element of disabled.splice(0)) { element.disabled = false }
    },
  }
}
"""
    _stylesheets = [":host { display: none !important; }"]


def mark_ended(doc: Any) -> bool:
    """Tell the page of ``doc`` that its session is over (sent before its websockets close); ``False`` if the
    page has no browser component. Call it with ``doc`` as Panel's current document."""
    for root in doc.roots:
        view = state._views.get(root.ref["id"]) if root.name == ROOT_NAME else None
        if view is not None and isinstance(view[0], BrowserActivity):
            # Through the component, not its model: Panel then sends the change as it sends its own.
            view[0].ended = True
            return True
    return False


Reporter = Callable[[str | None, bool], None]
"""``reporter(visibility, interacted)``: called on the session's IOLoop for each report of the page."""


def make_component(reporter: Reporter) -> BrowserActivity:
    """A component whose reports go to ``reporter``, sized to take no room."""
    component = BrowserActivity(  # type: ignore[no-untyped-call]
        width=0, height=0, margin=0, sizing_mode="fixed", visible=True, name=ROOT_NAME, css_classes=["sm-browser"]
    )

    def changed(*events: Any) -> None:
        visibility = component.visibility
        interacted = any(event.name == "interactions" for event in events)
        try:
            reporter(visibility if visibility in ("visible", "hidden") else None, interacted)
        except Exception:
            logger.exception("browser activity report failed")

    component.param.watch(changed, ["visibility", "interactions"])
    return component
