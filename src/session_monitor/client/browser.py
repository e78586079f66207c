"""The page side of liveness: a hidden Panel component reporting visibility and the user's last interaction.

Added by the Panel integration to every tracked page (the app does nothing). It
only *reports*: a hidden or frozen tab runs no timers (see DESIGN.md, "Facts
measured"), so nothing here may end a session; the websocket and its pongs
decide liveness, this component feeds the dashboard and idle culling.

The component is a root of the document with no size and ``display: none``: it
takes no room in any layout or template, and its ``render`` still runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import param
from panel.custom import JSComponent

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

    _esm = """
export function render({ model, el }) {
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
  model.on("remove", () => {
    document.removeEventListener("visibilitychange", visibility)
    for (const kind of kinds) { window.removeEventListener(kind, interacted, { capture: true }) }
  })
  visibility()
}
"""
    _stylesheets = [":host { display: none !important; }"]


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
