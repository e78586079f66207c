"""Settings shared by every page and every process: a settings panel kept in the session monitor's shared config.

Run the monitor (``session-monitor serve``), then::

    panel serve examples/settings_app.py --num-procs 2

Open the app in two browsers: change a setting in one and the other page follows within a second, whichever
process serves it. The values live in the monitor (``shared_config("settings_app")``), versioned: no process
overwrites another's change with a stale copy, the dashboard's Config tab shows who changed what and when (and
reverts), and a Panel process restarted while the monitor is down starts with the last values it saw.

Panel clears this script's globals when a session ends: what the callbacks use is bound to the page object.
"""

import html
import os
from functools import partial
from typing import Any

import panel as pn

import session_monitor

APP = "settings_app"

DEFAULTS: dict[str, Any] = {"title": "Sales report", "theme": "light", "rows": 25, "show_grid": True}

pn.extension(notifications=True)


class SettingsPage:
    """One browser page: the settings widgets, a preview of them, and what binds both to the shared config."""

    def __init__(self) -> None:
        self.cfg = session_monitor.shared_config(APP)
        self.defaults = dict(DEFAULTS)
        self.widgets: dict[str, Any] = {
            "title": pn.widgets.TextInput(name="Report title", width=300),
            "theme": pn.widgets.RadioButtonGroup(name="Theme", options=["light", "dark"], width=300),
            "rows": pn.widgets.IntSlider(name="Rows per page", start=5, end=100, step=5, width=300),
            "show_grid": pn.widgets.Checkbox(name="Show grid lines"),
        }
        for key, widget in self.widgets.items():
            widget.value = self.cfg.get(key, self.defaults[key])
            widget.param.watch(partial(self.changed, key), "value")
            self.cfg.watch(key, partial(self.pushed, key))  # on this session's IOLoop; forgotten when it ends
        self.preview = pn.pane.HTML(self.preview_html(), width=420, name="preview")
        self.served_by = pn.pane.Str(f"served by process {os.getpid()}", name="served-by", styles={"color": "#666"})

    async def changed(self, key: str, event: Any) -> None:
        """A widget moved in this page: write it (unless it only shows a value that came from elsewhere)."""
        self.preview.object = self.preview_html()
        if event.new == self.cfg.get(key, self.defaults[key]):
            return
        try:
            await self.cfg.aset(key, event.new)  # on the agent's connections: this loop only awaits
        except session_monitor.SessionMonitorError as exc:
            if pn.state.notifications is not None:  # notyf renders HTML: the message is escaped
                pn.state.notifications.error(html.escape(f"not saved: {exc}"), duration=6000)
            self.widgets[key].value = self.cfg.get(key, self.defaults[key])

    def pushed(self, key: str, value: Any, _version: int) -> None:
        """Another page or process changed the setting (or deleted it: back to the default)."""
        self.widgets[key].value = self.defaults[key] if value is None else value

    def preview_html(self) -> str:
        values = {key: widget.value for key, widget in self.widgets.items()}
        dark = values["theme"] == "dark"
        style = f"background:{'#1f2328' if dark else '#ffffff'};color:{'#e6edf3' if dark else '#1f2328'};"
        border = "1px solid #8c959f" if values["show_grid"] else "none"
        cell = f"<td style='border:{border};padding:2px 8px'>{{}}</td>"
        rows = min(int(values["rows"]), 5)
        cells = "".join("<tr>" + "".join(cell.format(r * 3 + c) for c in range(3)) + "</tr>" for r in range(rows))
        title = html.escape(str(values["title"]))  # settings are anyone's text: escaped, never HTML
        return (
            f"<div style='{style}padding:10px;border-radius:6px'><h3 style='margin:0 0 6px' id='preview-title'>"
            f"{title}</h3><table style='border-collapse:collapse'>{cells}</table>"
            f"<small>{int(values['rows'])} rows per page</small></div>"
        )

    def view(self) -> pn.viewable.Viewable:
        controls = pn.Column("## Settings", *self.widgets.values(), self.served_by)
        return pn.Row(controls, pn.Column("## Preview", self.preview))


SettingsPage().view().servable(title="Shared settings")
