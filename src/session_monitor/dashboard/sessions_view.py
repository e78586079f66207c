# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""The live sessions tab: a Tabulator kept up to date in place, filters, and Kill / Kill all with confirmation.

Each refresh diffs the new list against the rows on display and applies only the difference: cell patches when
the same sessions are there (Tabulator re-renders only what is on the current page), and a new table value only
when sessions came or went (again only the current page goes to the browser, with remote pagination). The
operator's sort, filters, page, scroll position and selection survive both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import panel as pn

from session_monitor.dashboard import model
from session_monitor.dashboard.client import ApiClient, SessionFeed
from session_monitor.dashboard.costs import COST_TITLES
from session_monitor.dashboard.notices_view import KillTiming
from session_monitor.dashboard.roles import ADMIN, DashboardRole
from session_monitor.dashboard.safe import escaped, from_visible, notify
from session_monitor.dashboard.views import PAGER, cost_formatters, page_text, titled
from session_monitor.errors import RequestFailed

logger = logging.getLogger(__name__)

ALL = "(all)"
MAX_CHOICES = 500
"""Filter drop-downs list at most this many values (the most frequent); the search box finds the rest."""

HIDDEN = ["session_id", "start_key", "task_key", "seen_key"]
OPTIONAL = ("visibility", "idle", "exempt")
"""Columns shown only while some row has a value in them."""
TITLES = {
    "app": "App",
    "user": "User",
    "host": "Host:PID",
    "state": "State",
    "task": "Current task",
    "task_for": "Task for",
    "started": "Started (UTC)",
    "duration": "Duration",
    "last_seen": "Last heartbeat",
    "visibility": "Page",
    "idle": "Idle",
    "exempt": "Culling",
    "kill": "",
    **COST_TITLES,
}
KILL_BUTTON = '<span style="color:#cf222e;font-weight:600">Kill</span>'


class SessionTable(pn.widgets.Tabulator):
    """Tabulator that sorts duration-like text columns by the timestamps they are computed from."""

    def _sort_df(self, df: pd.DataFrame) -> pd.DataFrame:
        if not self.sorters:
            return df
        fields, ascending = [], []
        for s in self.sorters:
            key, flip = model.SORT_KEYS.get(s["field"], (s["field"], False))
            fields.append(key)
            ascending.append((s["dir"] == "asc") != flip)

        def by(col: pd.Series) -> pd.Series:
            return col.str.lower() if col.dtype.kind in "OSU" else col

        return df.sort_values(fields, ascending=ascending, kind="mergesort", key=by, na_position="last")


_RENDERER = model.RowRenderer()
"""Shared by every page of the process: rows are derived once per fetch, whatever the number of pages."""


def _frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    return pd.DataFrame.from_records(rows, columns=list(model.COLUMNS))


def _choices(values: pd.Series) -> list[str]:
    top = values[values != ""].value_counts().index[:MAX_CHOICES]
    return [ALL, *sorted(map(str, top), key=str.lower)]


class SessionsView:
    """One operator's sessions tab. ``refresh()`` is called every second by the page's periodic callback."""

    def __init__(
        self, client: ApiClient, feed: SessionFeed, *, actor: str, page_size: int = 50, role: DashboardRole = ADMIN
    ) -> None:
        self.client, self.feed, self.actor, self.role = client, feed, actor, role
        # A viewer gets no Kill column; an operator of some apps gets Kill on their rows only (see _frame_for).
        self._hidden = [*HIDDEN] if role.can_kill else [*HIDDEN, "kill"]
        self.rows: dict[str, tuple[Any, ...]] = {}
        self.positions: dict[str, int] = {}
        self.last_cycle: dict[str, Any] = {}
        self._pending: Callable[[], Awaitable[None]] | None = None
        self._filter_on = False

        self.table = SessionTable(
            value=_frame([]),
            pagination="remote",
            page_size=page_size,
            show_index=False,
            disabled=True,
            selectable=True,
            hidden_columns=[*self._hidden, *OPTIONAL],
            titles=TITLES,
            formatters={
                **{c: {"type": "plaintext"} for c in model.COLUMNS if c != "state"},
                **{c: titled() for c in model.TEXT_COLUMNS},
                "state": {"type": "lookup", **model.state_html()},
                "kill": {"type": "lookup", model.KILL: KILL_BUTTON},
                **cost_formatters(),
            },
            sortable={"kill": False},
            header_align="left",
            configuration=PAGER,
            layout="fit_data_fill",  # as wide as the page, scrolled sideways when the columns are wider
            frozen_columns={"kill": "right"},  # Kill stays in view however wide the other columns are
            widths={"state": 140},  # "● disconnected" in bold, unclipped
            sizing_mode="stretch_width",
            name="sessions",
        )
        self.table.on_click(self._on_click, column="kill")
        self._summary_text = ""
        self.table.param.watch(lambda _e: self._show_summary(), "page")

        self.app_filter = pn.widgets.Select(name="App", options=[ALL], width=180)
        self.user_filter = pn.widgets.Select(name="User", options=[ALL], width=150)
        self.state_filter = pn.widgets.Select(name="State", options=[ALL, *model.STATES, "unknown"], width=130)
        self.host_filter = pn.widgets.Select(name="Host", options=[ALL], width=150)
        self.search = pn.widgets.TextInput(name="Search", placeholder="id, app, user, task, host", width=220)
        for w in (self.app_filter, self.user_filter, self.state_filter, self.host_filter):
            w.param.watch(self._filters_changed, "value")
        self.search.param.watch(self._filters_changed, "value_input")

        self.kill_app = pn.widgets.Select(name="Kill all sessions of app", options={}, width=260)
        self.kill_all_button = pn.widgets.Button(name="Kill all…", button_type="danger", width=110, align="end")
        self.kill_all_button.on_click(self._ask_kill_all)

        self.summary = pn.pane.HTML("", sizing_mode="stretch_width")
        self.confirm_text = pn.pane.HTML("", sizing_mode="stretch_width")
        self.confirm_button = pn.widgets.Button(name="Confirm", button_type="danger", width=200)
        self.cancel_button = pn.widgets.Button(name="Cancel", width=100)
        self.confirm_button.on_click(self._confirmed)
        self.cancel_button.on_click(lambda _e: self._close_confirm())
        self.timing = KillTiming()
        self.confirm_box = pn.Column(
            self.confirm_text,
            self.timing.panel(),
            pn.Row(self.confirm_button, self.cancel_button),
            visible=False,
            styles={"border": "2px solid #cf222e", "border-radius": "6px", "padding": "4px 12px"},
            sizing_mode="stretch_width",
            name="confirm",
        )
        self.outcome = pn.pane.HTML("", sizing_mode="stretch_width", name="outcome")

    # -- layout ----------------------------------------------------------------------------------

    def panel(self) -> pn.viewable.Viewable:
        filters = pn.Row(self.app_filter, self.user_filter, self.state_filter, self.host_filter, self.search)
        # A viewer's page has no Kill all at all (not merely hidden).
        kill_all = [pn.Row(self.kill_app, self.kill_all_button)] if self.role.can_kill else []
        return pn.Column(
            self.summary, filters, *kill_all, self.confirm_box, self.outcome, self.table, sizing_mode="stretch_width"
        )

    # -- refresh ---------------------------------------------------------------------------------

    async def refresh(self) -> None:
        try:
            fetched = await self.feed.get()
        except RequestFailed as exc:
            self.summary.object = f'<span style="color:#cf222e">{escaped(exc)}</span> (retrying every second)'
            return
        started = time.perf_counter()
        now = fetched.fetched_at
        if "rows" not in fetched.derived:  # once per fetch, whatever the number of open pages
            fetched.derived["rows"] = _RENDERER.rows_by_id(
                fetched.data["sessions"], now, fetched.data.get("agent_last_seen")
            )
        new: dict[str, tuple[Any, ...]] = fetched.derived["rows"]
        diff = model.diff_rows(self.rows, new)
        self.apply(diff, new)
        apply_s = time.perf_counter() - started
        self.last_cycle = {
            "sessions": len(new),
            "api_s": fetched.seconds,
            "api_bytes": fetched.nbytes,
            "apply_s": apply_s,
            "added": len(diff.added),
            "removed": len(diff.removed),
            "changed_rows": len(diff.changed),
            "changed_cells": diff.cells,
        }
        logger.debug("dashboard cycle %s", self.last_cycle)
        apps = model.app_counts(new.values())
        self._summary_text = (
            f"<b>{len(new):,}</b> live sessions in <b>{len(apps):,}</b> apps · updated "
            f"{now:%H:%M:%S} UTC · API {fetched.seconds * 1000:.0f} ms, {fetched.nbytes / 1024:.0f} KiB"
        )
        self._show_summary()

    def _show_summary(self) -> None:
        where = page_text(self.table)
        self.summary.object = f"{self._summary_text} · {where}" if where else self._summary_text

    def apply(self, diff: model.Diff, new: dict[str, tuple[Any, ...]]) -> None:
        """Bring the table to ``new`` by applying ``diff``; nothing is sent when nothing changed."""
        if diff.empty:
            return
        table = self.table
        if diff.added or diff.removed:
            # The API lists newest first, so without a sort the newest sessions are on the first page.
            selected = [table.value["session_id"].iat[i] for i in table.selection if i < len(table.value)]
            self.rows = new
            self.positions = {sid: i for i, sid in enumerate(new)}
            frame = self._frame_for(list(new.values()))
            table.value = frame
            table.selection = [self.positions[s] for s in selected if s in self.positions]
            self._update_choices(frame)
            return
        # Write every changed cell into the table's frame, one vectorised assignment per column and no event:
        # Panel's own patch() assigns cell by cell (seconds for 10,000 rows).
        frame = table.value
        by_column: dict[int, tuple[list[int], list[Any]]] = {}
        for sid, cells in diff.changed.items():
            pos = self.positions[sid]
            for col, value in cells.items():
                positions, values = by_column.setdefault(col, ([], []))
                positions.append(pos)
                values.append(value)
        for col, (positions, values) in by_column.items():
            frame.iloc[positions, col] = values
        self.rows = new
        # Then send the browser what it shows. Unsorted and unfiltered, the first page is the frame's first rows:
        # patch just their changed cells. Otherwise let Panel re-sort, re-filter and re-send the current page
        # (Panel's patch() maps rows past the first page wrongly under remote pagination).
        size = int(table.page_size or 1)
        start = (table.page - 1) * size
        plain = not (table.sorters or self._filter_on)
        visible: dict[str, list[tuple[int, Any]]] = {}
        for col, (positions, values) in by_column.items():
            shown = [(p, v) for p, v in zip(positions, values, strict=True) if start <= p < start + size]
            if shown:
                visible[model.COLUMNS[col]] = shown
        if plain and table.page == 1:
            if visible:
                table.patch(visible, as_index=False)
        elif visible or not plain:
            table.param.trigger("value")
        if any(model.COLUMNS[c] in ("app", "user", "host", *OPTIONAL) for c in by_column):
            self._update_choices(frame)

    def _update_choices(self, frame: pd.DataFrame) -> None:
        for widget, col in ((self.app_filter, "app"), (self.user_filter, "user"), (self.host_filter, "host")):
            options = _choices(frame[col])
            if widget.value not in options:
                options.append(widget.value)  # keep the operator's filter even if its sessions are gone
            if options != widget.options:
                widget.options = options
        counts = model.app_counts(self.rows.values())
        kill_options = {f"{app} ({n})": app for app, n in counts.items() if self.role.may_kill(from_visible(app))}
        if kill_options != self.kill_app.options:
            self.kill_app.options = kill_options
        shown = [c for c in OPTIONAL if (frame[c] != "").any()]
        hidden = [*self._hidden, *(c for c in OPTIONAL if c not in shown)]
        if hidden != self.table.hidden_columns:
            self.table.hidden_columns = hidden

    # -- filters ---------------------------------------------------------------------------------

    def _filter(self, df: pd.DataFrame) -> pd.Series:
        mask = pd.Series(True, index=df.index)
        for widget, col in (
            (self.app_filter, "app"),
            (self.user_filter, "user"),
            (self.state_filter, "state"),
            (self.host_filter, "host"),
        ):
            if widget.value != ALL:
                mask &= df[col] == widget.value
        needle = (self.search.value_input or "").strip().lower()
        if needle:
            found = pd.Series(False, index=df.index)
            for col in ("session_id", "app", "user", "host", "task"):
                found |= df[col].str.lower().str.contains(needle, regex=False)
            mask &= found
        return mask

    def _filters_changed(self, *_events: Any) -> None:
        # Panel re-sends the whole page on every patch while any filter is registered, so the filter is
        # registered only while one is set: unfiltered, a refresh patches only the cells that changed.
        active = any(w.value != ALL for w in (self.app_filter, self.user_filter, self.state_filter, self.host_filter))
        active = active or bool((self.search.value_input or "").strip())
        if self._filter_on:
            self.table.remove_filter(self._filter)
            self._filter_on = False
        if active:
            self.table.add_filter(self._filter)
            self._filter_on = True
        self.table.page = 1

    # -- kill and kill all -----------------------------------------------------------------------

    def _frame_for(self, rows: list[tuple[Any, ...]]) -> pd.DataFrame:
        """The rows as this user's table: no Kill on the rows of apps an operator does not operate.

        Rows are derived once per fetch for every page; this page's frame is its own, and an app's rows never
        change app, so blanking the cell once, when rows come, holds."""
        frame = _frame(rows)
        if not self.role.can_kill:
            frame["kill"] = ""  # hidden too: not even a hidden "Kill" in the page
        elif self.role.apps is not None and len(frame):
            theirs = frame["app"].map(from_visible).isin(self.role.apps)
            frame.loc[~theirs, "kill"] = ""
        return frame

    def _on_click(self, event: Any) -> None:
        row = self.table.value.iloc[event.row]
        sid, app, user, host = row["session_id"], row["app"], row["user"], row["host"]
        if row["kill"] != model.KILL and self.role.can_kill:
            return  # an empty cell: this operator does not operate this app
        # A viewer has no Kill column; a click that comes anyway (a forged event) goes to the API, which refuses it.

        async def kill() -> None:
            data = await self.client.kill(
                sid, actor=self.actor, reason=timing.reason.value, delay_s=timing.delay_s, role=self.role
            )
            self._report(timing.done(data, f"session <code>{escaped(sid)}</code> of app <b>{escaped(app)}</b>"))

        timing = self.timing

        self._ask(
            f"Kill session <code>{escaped(sid)}</code> of app <b>{escaped(app)}</b>"
            f" (user <b>{escaped(user or '-')}</b>, host {escaped(host or '-')})? Its page closes and its"
            " kill callbacks run.",
            "Kill this session",
            kill,
        )

    def _ask_kill_all(self, _event: Any) -> None:
        app = self.kill_app.value
        if not app:
            self._report("No app to kill: there are no live sessions.", error=True)
            return
        count = model.app_counts(self.rows.values()).get(app, 0)

        async def kill_all() -> None:
            data = await self.client.kill_all(from_visible(app), actor=self.actor, reason=timing.reason.value,
                                              delay_s=timing.delay_s, role=self.role)  # fmt: skip
            count = data.get("live_count", data["killed_count"])
            self._report(timing.done(data, f"<b>{count}</b> session(s) of app <b>{escaped(app)}</b>"))

        timing = self.timing

        self._ask(
            f"Kill <b>all {count}</b> live session(s) of app <b>{escaped(app)}</b>? Every one of its pages closes.",
            f"Kill all {count} of this app",
            kill_all,
        )

    def _ask(self, question_html: str, confirm_label: str, action: Callable[[], Awaitable[None]]) -> None:
        self._pending = action
        self.timing.reset()
        self.confirm_text.object = question_html
        self.confirm_button.name = confirm_label
        self.confirm_box.visible = True

    def _close_confirm(self) -> None:
        self._pending = None
        self.confirm_box.visible = False

    async def _confirmed(self, _event: Any) -> None:
        action, self._pending = self._pending, None
        self.confirm_box.visible = False
        if action is None:
            return
        try:
            await action()
        except RequestFailed as exc:
            self._report(f"Failed: {escaped(exc)}", error=True)
        except Exception as exc:  # every failure shows in the page, not only in the dashboard's log
            logger.exception("dashboard action by %s failed", self.actor)
            self._report(f"Failed: {escaped(type(exc).__name__)}: {escaped(exc)}", error=True)
        self.feed.fetch_soon()  # show the outcome at the next refresh, not a second later

    def _report(self, message_html: str, *, error: bool = False) -> None:
        colour = "#cf222e" if error else "#1a7f37"
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        self.outcome.object = f'<div style="color:{colour}">{stamp} UTC · {message_html}</div>'
        notify(message_html, error=error)
        (logger.warning if error else logger.info)("%s (by %s)", message_html, self.actor)
