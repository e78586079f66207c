# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""System status (``GET /agents``), history (``GET /history``) and audit (``GET /audit``) tabs.

Each is a read-only Tabulator of display text, refreshed every few seconds and re-sent only when its rows
changed. Every column uses the escaping :func:`titled` formatter (long text cut, all of it on hover).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import panel as pn
from bokeh.models.widgets.tables import HTMLTemplateFormatter, NumberFormatter

from session_monitor.dashboard.costs import NUMBER_FORMATS, leftovers_text
from session_monitor.dashboard.model import fmt_duration, fmt_time, parse_time, seen_band, text
from session_monitor.dashboard.safe import escaped, visible_controls
from session_monitor.errors import RequestFailed

Row = tuple[str, ...]

MAX_COLUMN_PX = 320
"""No column grows wider than this: a 200-character app name is cut with an ellipsis, not the other columns."""

PAGER: dict[str, Any] = {"paginationButtonCount": 0, "columnDefaults": {"maxWidth": MAX_COLUMN_PX}}
"""Tabulator configuration of every paginated table: First/Prev/Next/Last without numbered page buttons.

Tabulator (6.4) redraws its numbered buttons on every data update and registers a language binding for each
new one that is never released (``Localize.langBind``), so an open page kept ~10 detached DOM nodes per update
(thousands a minute on the sessions tab). Its page counter leaks the same way, so :func:`page_text` says where
the operator is instead.
"""


def titled() -> HTMLTemplateFormatter:
    """A cell formatter for client text: the text, cut with an ellipsis when long, and all of it on hover.

    ``<%- %>`` is the template's HTML-escaping interpolation (Underscore's ``_.escape``: ``& < > " ' ```), so the
    text is text in the cell and in its ``title``. One per table: a Bokeh model lives in one document.
    """
    return HTMLTemplateFormatter(template='<span title="<%- value %>"><%- value %></span>')


def cost_formatters() -> dict[str, NumberFormatter]:
    """The numeric cost columns' cell formatters: NaN (a session not measured yet) is an empty cell, not "NaN"."""
    return {c: NumberFormatter(format=f, nan_format="", null_format="") for c, f in NUMBER_FORMATS.items()}


def page_text(table: pn.widgets.Tabulator) -> str:
    """``page 3 of 100`` for a paginated table (``""`` when it fits on one page)."""
    last = int(table.param.page.bounds[1] or 1) if table.param.page.bounds else 1
    return f"page {table.page:,} of {last:,}" if last > 1 else ""


def _mib(value: Any) -> str:
    return f"{value / 2**20:,.0f} MiB" if isinstance(value, int | float) else ""


def _cpu(value: Any) -> str:
    return f"{value:.1f} %" if isinstance(value, int | float) else ""


def _agent_status(a: Mapping[str, Any]) -> str:
    """``ok``, ``stale``, ``exited``, or ``draining until 18:00:00 UTC`` with the drain's deadline."""
    if a.get("is_stale"):
        return "stale"
    if a.get("exited_at"):
        return "exited"
    drain = a.get("drain") or {}
    deadline = parse_time(drain.get("deadline")) if drain else None
    return f"draining until {deadline:%H:%M:%S} UTC" if deadline else "ok"


def agent_row(a: Mapping[str, Any], now: datetime) -> Row:
    seen = parse_time(a.get("last_seen"))
    versions = a.get("versions") or {}
    return (
        text(a.get("host")),
        text(a.get("pid")),
        _agent_status(a),
        ", ".join(text(x) for x in a.get("apps") or []),
        str(a.get("session_count", 0)),
        _cpu(a.get("cpu_percent")),
        _mib(a.get("rss_bytes")),
        ", ".join(f"{text(k)} {text(v)}" for k, v in sorted(versions.items())),
        seen_band((now - seen).total_seconds())[1] if seen else "",
        fmt_time(parse_time(a.get("started_at"))),
        text(a.get("command")),
        leftovers_text(a),
    )


AGENT_COLUMNS = ("Host", "PID", "Status", "Apps", "Sessions", "CPU", "RSS", "Versions", "Last seen", "Started (UTC)",
                 "Command", "Leftovers")  # fmt: skip


def history_row(s: Mapping[str, Any], _now: datetime) -> Row:
    return (
        text(s.get("app_name")),
        text(s.get("user_id")),
        text(s.get("end_reason")),
        fmt_time(parse_time(s.get("start_time"))),
        fmt_time(parse_time(s.get("ended_at"))),
        fmt_duration(s.get("duration_seconds")),
        text(s.get("ended_by")),
        text(s.get("kill_reason")),
        f"{text(s.get('host'))}:{text(s.get('pid'))}" if s.get("pid") is not None else text(s.get("host")),
        text(s.get("session_id")),
    )


HISTORY_COLUMNS = ("App", "User", "End reason", "Started (UTC)", "Ended (UTC)", "Duration", "Ended by", "Kill reason",
                   "Host:PID", "Session")  # fmt: skip


def audit_row(e: Mapping[str, Any], _now: datetime) -> Row:
    detail = e.get("detail") or {}
    return (
        fmt_time(parse_time(e.get("at"))),
        text(e.get("actor")),
        text(e.get("action")),
        text(e.get("target")),
        visible_controls(json.dumps(detail, ensure_ascii=False, sort_keys=True)) if detail else "",
        text(e.get("remote_addr")),
    )


AUDIT_COLUMNS = ("When (UTC)", "Who", "What", "Target", "Detail", "From")


class RecordsView:
    """A read-only table of rows made by ``to_row`` from what ``fetch`` returns."""

    def __init__(
        self,
        title: str,
        columns: Sequence[str],
        fetch: Callable[[], Awaitable[list[dict[str, Any]]]],
        to_row: Callable[[Mapping[str, Any], datetime], Row],
        *,
        help_text: str = "",
        stale_column: str | None = None,
    ) -> None:
        self.columns, self.fetch, self.to_row = list(columns), fetch, to_row
        self.rows: list[Row] = []
        self.status = pn.pane.HTML(escaped(help_text), sizing_mode="stretch_width")
        self.table = pn.widgets.Tabulator(
            value=pd.DataFrame(columns=self.columns),
            pagination="local",
            page_size=25,
            show_index=False,
            disabled=True,
            formatters={c: titled() for c in self.columns},
            configuration=PAGER,
            layout="fit_data_fill",  # as wide as the page, scrolled sideways when the columns are wider
            header_align="left",
            sizing_mode="stretch_width",
            name=title,
        )
        if stale_column:
            self.table.style.apply(_mark_stale, subset=[stale_column])  # type: ignore[union-attr]
        self.title = title
        self.table.param.watch(lambda _e: self._show_status(), "page")
        self._status_text = ""

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(self.status, self.table, name=self.title, sizing_mode="stretch_width")

    async def refresh(self) -> None:
        try:
            records = await self.fetch()
        except RequestFailed as exc:
            self.status.object = f'<span style="color:#cf222e">{escaped(exc)}</span>'
            return
        now = datetime.now(UTC)
        rows = [self.to_row(r, now) for r in records]
        self._status_text = f"{len(rows):,} row(s) · updated {now:%H:%M:%S} UTC"
        if rows != self.rows:
            self.rows = rows
            self.table.value = pd.DataFrame.from_records(rows, columns=self.columns)
        self._show_status()

    def _show_status(self) -> None:
        where = page_text(self.table)
        self.status.object = escaped(f"{self._status_text} · {where}" if where else self._status_text)


def _mark_stale(col: pd.Series) -> list[str]:
    return [
        "color:#cf222e;font-weight:600"
        if v == "stale"
        else "color:#9a6700;font-weight:600"
        if str(v).startswith("draining")
        else ""
        for v in col
    ]
