# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""System status (``GET /agents``), history (``GET /history``) and audit (``GET /audit``) tabs.

Each is a read-only Tabulator of display text, refreshed every few seconds and re-sent only when its rows
changed. Every column uses the escaping ``plaintext`` formatter.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import panel as pn

from session_monitor.dashboard.costs import leftovers_text
from session_monitor.dashboard.model import fmt_duration, fmt_time, parse_time, seen_band, text
from session_monitor.dashboard.safe import escaped
from session_monitor.errors import RequestFailed

Row = tuple[str, ...]


def _mib(value: Any) -> str:
    return f"{value / 2**20:,.0f} MiB" if isinstance(value, int | float) else ""


def _cpu(value: Any) -> str:
    return f"{value:.1f} %" if isinstance(value, int | float) else ""


def agent_row(a: Mapping[str, Any], now: datetime) -> Row:
    seen = parse_time(a.get("last_seen"))
    versions = a.get("versions") or {}
    return (
        text(a.get("host")),
        text(a.get("pid")),
        "stale" if a.get("is_stale") else ("exited" if a.get("exited_at") else "ok"),
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
        json.dumps(detail, ensure_ascii=False, sort_keys=True) if detail else "",
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
            formatters={c: {"type": "plaintext"} for c in self.columns},
            header_align="left",
            sizing_mode="stretch_width",
            name=title,
        )
        if stale_column:
            self.table.style.apply(_mark_stale, subset=[stale_column])  # type: ignore[union-attr]
        self.title = title

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
        self.status.object = f"{len(rows):,} row(s) · updated {now:%H:%M:%S} UTC"
        if rows != self.rows:
            self.rows = rows
            self.table.value = pd.DataFrame.from_records(rows, columns=self.columns)


def _mark_stale(col: pd.Series) -> list[str]:
    return ["color:#cf222e;font-weight:600" if v == "stale" else "" for v in col]
