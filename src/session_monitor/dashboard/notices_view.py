# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""The Notices tab (post an announcement with a preview; the active ones with Remove; the pending kills with
Cancel) and the "now or in N minutes" choice of the kill dialogs (:class:`KillTiming`).

Every text the operator or an app wrote is escaped before it is put in HTML (the preview, the tables).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import panel as pn

from session_monitor.dashboard.client import ApiClient
from session_monitor.dashboard.safe import escaped, notify
from session_monitor.dashboard.views import PAGER, titled
from session_monitor.errors import RequestFailed

logger = logging.getLogger(__name__)

LEVEL_STYLE = {
    "info": "background:#e8f1fb;border:1px solid #7aa7d9;color:#0b3a66",
    "warning": "background:#fff4d6;border:1px solid #e0b339;color:#5c4200",
    "error": "background:#fde8e8;border:1px solid #d97a7a;color:#6b0d0d",
}
"""The page banner's colours (``client/banner.py``), for the preview."""
MAX_MESSAGE = 500
ANNOUNCEMENT_COLUMNS = ["id", "Level", "Message", "Targets", "Until (UTC)", "By", "Posted (UTC)"]
KILL_COLUMNS = ["id", "Target", "Deadline (UTC)", "Left", "Reason", "By"]


def preview_html(message: str, level: str) -> str:
    """What the pages will show: the banner, its text escaped."""
    text = escaped(message.strip()) or "<i style='opacity:.6'>(the message)</i>"
    style = LEVEL_STYLE.get(level, LEVEL_STYLE["info"])
    return (f"<div class='sm-preview' style='{style};border-radius:6px;padding:7px 12px;display:inline-block;"
            f"max-width:900px;white-space:pre-wrap;box-shadow:0 2px 8px rgba(0,0,0,.18)'>{text}</div>")  # fmt: skip


def _utc(value: str | None) -> str:
    return "" if not value else datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _targets(a: dict[str, Any]) -> str:
    parts = [f"{name} {', '.join(a[key])}" for key, name in (("apps", "app"), ("hosts", "host"),
             ("session_ids", "session")) if a.get(key)]  # fmt: skip
    return "; ".join(parts) or "every page"


def _left(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


class KillTiming:
    """The kill dialogs' choice: now, or in N minutes (the pages show a countdown), and the reason shown."""

    def __init__(self) -> None:
        self.when = pn.widgets.RadioButtonGroup(options=["Now", "In N minutes"], value="Now", name="When")
        self.minutes = pn.widgets.IntInput(name="Minutes", value=5, start=1, end=7 * 24 * 60, width=90)
        self.reason = pn.widgets.TextInput(
            name="Reason (shown to the user)", placeholder="e.g. new version at 18:00", max_length=500, width=320
        )

    def panel(self) -> pn.viewable.Viewable:
        return pn.Row(pn.Column(pn.pane.HTML("<b>When</b>", margin=(0, 5)), self.when), self.minutes, self.reason)

    def reset(self) -> None:
        self.when.value, self.reason.value = "Now", ""

    @property
    def delay_s(self) -> float | None:
        return float(self.minutes.value or 1) * 60 if self.when.value != "Now" else None

    def done(self, data: dict[str, Any], what_html: str) -> str:
        """The outcome line of a kill: requested now, or scheduled with its deadline."""
        if data.get("pending_kill_id"):
            return (
                f"Kill scheduled for {what_html} at <b>{escaped(_utc(data['deadline']))} UTC</b> (pending kill "
                f"{int(data['pending_kill_id'])}; its pages show a countdown; cancel it in the Notices tab)."
            )
        return f"Kill requested for {what_html}."  # fmt: skip


class NoticesView:
    """The Notices tab. ``refresh()`` is called every few seconds by the page's periodic callback."""

    def __init__(self, client: ApiClient, *, actor: str, apps: Callable[[], list[str]], limited: bool = False) -> None:
        """``apps``: the apps the user may announce to; ``limited``: an operator of some apps, who must pick them."""
        self.client, self.actor, self.apps, self.limited = client, actor, apps, limited
        self.message = pn.widgets.TextAreaInput(name="Announcement (text, ≤ 500 characters)", max_length=MAX_MESSAGE,
                                                height=70, sizing_mode="stretch_width")  # fmt: skip
        self.level = pn.widgets.Select(name="Level", options=["info", "warning", "error"], value="warning", width=120)
        # A native <select multiple>: its options are text. (MultiChoice's Choices.js writes option labels as HTML:
        # an app named <img src=x onerror=...> ran its script in the dashboard.)
        label = "Apps (pick at least one of yours)" if limited else "Apps (none: every app)"
        self.target_apps = pn.widgets.MultiSelect(name=label, options=[], width=320, size=3)
        self.until = pn.widgets.IntInput(name="Shown for (minutes, 0: until removed)", value=0, start=0,
                                         end=7 * 24 * 60, width=240)  # fmt: skip
        self.post = pn.widgets.Button(name="Post announcement", button_type="primary", width=200, align="end")
        self.preview = pn.pane.HTML(preview_html("", "warning"), sizing_mode="stretch_width", name="preview")
        self.outcome = pn.pane.HTML("", sizing_mode="stretch_width", name="notice-outcome")
        for widget in (self.message, self.level):
            widget.param.watch(self._preview, "value_input" if widget is self.message else "value")
        self.post.on_click(self._post)
        self.announcements = self._table("announcements", ANNOUNCEMENT_COLUMNS, "remove", "Remove")
        self.kills = self._table("pending kills", KILL_COLUMNS, "cancel", "Cancel")
        self.announcements.on_click(self._remove, column="remove")
        self.kills.on_click(self._cancel, column="cancel")

    @staticmethod
    def _table(name: str, columns: list[str], button: str, label: str) -> pn.widgets.Tabulator:
        return pn.widgets.Tabulator(
            value=pd.DataFrame(columns=columns), show_index=False, disabled=True, pagination="local", page_size=10,
            hidden_columns=["id"], formatters={c: titled() for c in columns if c != "id"}, configuration=PAGER,
            buttons={button: f'<span style="color:#cf222e;font-weight:600">{label}</span>'},
            layout="fit_data_fill", header_align="left", sizing_mode="stretch_width", name=name,
        )  # fmt: skip

    def panel(self) -> pn.viewable.Viewable:
        form = pn.Column(
            self.message,
            pn.Row(self.level, self.target_apps, self.until, self.post),
            pn.pane.HTML("<b>Preview</b> (as the pages will show it)", margin=(0, 10)),
            self.preview,
            self.outcome,
            styles={"border": "1px solid #d0d7de", "border-radius": "6px", "padding": "4px 12px"},
            sizing_mode="stretch_width",
        )
        return pn.Column(
            form,
            pn.pane.HTML("<h3 style='margin:8px 0 0'>Active announcements</h3>"),
            self.announcements,
            pn.pane.HTML("<h3 style='margin:8px 0 0'>Pending kills (given notice)</h3>"),
            self.kills,
            sizing_mode="stretch_width",
        )

    def _preview(self, *_events: Any) -> None:
        self.preview.object = preview_html(self.message.value_input or "", self.level.value)

    async def refresh(self) -> None:
        apps = sorted(set(self.apps()) | set(self.target_apps.value))
        if apps != self.target_apps.options:
            self.target_apps.options = apps
        try:
            announcements, kills = await self.client.announcements(), await self.client.pending_kills()
        except RequestFailed as exc:
            self.outcome.object = f'<span style="color:#cf222e">{escaped(exc)}</span>'
            return
        rows = [[a["id"], a["level"], a["message"], _targets(a), _utc(a["until"]), a["created_by"],
                 _utc(a["created_at"])] for a in announcements]  # fmt: skip
        self._show(self.announcements, rows, ANNOUNCEMENT_COLUMNS)
        rows = [[k["id"], k["session_id"] or f"app {k['app_name']}", _utc(k["deadline"]), _left(k["seconds_left"]),
                 k["reason"] or "", k["created_by"]] for k in kills]  # fmt: skip
        self._show(self.kills, rows, KILL_COLUMNS)

    @staticmethod
    def _show(table: pn.widgets.Tabulator, rows: list[list[Any]], columns: list[str]) -> None:
        frame = pd.DataFrame.from_records(rows, columns=columns)
        if not frame.equals(table.value):
            table.value = frame

    async def _post(self, _event: Any) -> None:
        message = (self.message.value_input or "").strip()
        if not message:
            self._report("Write the announcement first.", error=True)
            return
        if self.limited and not self.target_apps.value:
            self._report("Pick the apps to announce to: you may announce to your apps only.", error=True)
            return
        body: dict[str, Any] = {"message": message, "level": self.level.value}
        if self.target_apps.value:
            body["apps"] = list(self.target_apps.value)
        if self.until.value:
            body["until"] = (datetime.now(UTC) + timedelta(minutes=int(self.until.value))).isoformat()
        data = await self._run(lambda: self.client.announce(body, actor=self.actor))
        if data is not None:
            self.message.value = self.message.value_input = ""
            self._preview()
            self._report(f"Announcement {int(data['id'])} posted to {escaped(_targets(data))}.")
            await self.refresh()

    def _remove(self, event: Any) -> None:
        announcement_id = int(self.announcements.value.iloc[event.row]["id"])
        pn.state.execute(self._act(lambda: self.client.remove_announcement(announcement_id, actor=self.actor),
                                   f"Announcement {announcement_id} removed."))  # fmt: skip

    def _cancel(self, event: Any) -> None:
        pending_id = int(self.kills.value.iloc[event.row]["id"])
        pn.state.execute(self._act(lambda: self.client.cancel_kill(pending_id, actor=self.actor),
                                   f"Pending kill {pending_id} cancelled: its countdowns go away."))  # fmt: skip

    def _act(self, action: Callable[[], Awaitable[Any]], done_html: str) -> Callable[[], Coroutine[Any, Any, None]]:
        async def run() -> None:
            if await self._run(action) is not None:
                self._report(done_html)
            await self.refresh()

        return run

    async def _run(self, action: Callable[[], Awaitable[Any]]) -> Any:
        """``action()``'s result, or ``None`` after reporting its failure in the page."""
        try:
            result = await action()
        except RequestFailed as exc:
            self._report(f"Failed: {escaped(exc)}", error=True)
            return None
        except Exception as exc:  # every failure shows in the page, not only in the dashboard's log
            logger.exception("dashboard action by %s failed", self.actor)
            self._report(f"Failed: {escaped(type(exc).__name__)}: {escaped(exc)}", error=True)
            return None
        return True if result is None else result

    def _report(self, message_html: str, *, error: bool = False) -> None:
        colour = "#cf222e" if error else "#1a7f37"
        self.outcome.object = f'<div style="color:{colour}">{datetime.now(UTC):%H:%M:%S} UTC · {message_html}</div>'
        notify(message_html, error=error)
