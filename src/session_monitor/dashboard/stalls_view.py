# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""Loop health on the System status tab, and the Stalls tab (``GET /stalls``).

The Stalls tab is a Tabulator of stalls, newest first: when, which process, app and session, how long, and
where the loop was blocked (the first app frame of the stack). Expanding a row shows the whole stack as text.
Stacks are client text: every table cell uses the escaping ``plaintext`` formatter and the expanded stack
is escaped (``safe.escaped``) inside a ``<pre>``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd  # type: ignore[import-untyped]
import panel as pn

from session_monitor.dashboard.client import ApiClient
from session_monitor.dashboard.model import fmt_time, parse_time, text
from session_monitor.dashboard.safe import escaped
from session_monitor.dashboard.views import AGENT_COLUMNS, Row, agent_row
from session_monitor.errors import RequestFailed

STALLS_LIMIT = 500
"""Stalls the tab lists (the newest)."""

FULL_REFRESH_S = 30.0
"""The list is fetched again at least this often (each second only the newest stall is looked at)."""

_LOOP_AT = AGENT_COLUMNS.index("Last seen") + 1  # after what an operator reads first: fits a 1500 px screen
AGENT_LOOP_COLUMNS: tuple[str, ...] = (
    *AGENT_COLUMNS[:_LOOP_AT], "Lag p99", "Lag max", "Busy", "Pool queue", *AGENT_COLUMNS[_LOOP_AT:],
)  # fmt: skip
"""The System status columns with the loop's (lag p99 and max of the last sync interval, busy share, pool)."""


def _ms(value: Any) -> str:
    if not isinstance(value, int | float):
        return ""
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"


def loop_cells(loop: Mapping[str, Any] | None) -> Row:
    """Lag p99, lag max, busy share and the pool's queue (busy threads / size) of an agent's ``loop``."""
    if not loop:
        return ("", "", "", "")
    busy = loop.get("busy")
    pool = ""
    if isinstance(loop.get("pool_size"), int):
        pool = f"{loop.get('pool_queue') or 0} ({loop.get('pool_busy') or 0}/{loop['pool_size']} busy)"
    return (
        _ms(loop.get("lag_p99_ms")),
        _ms(loop.get("lag_max_ms")),
        f"{busy * 100:.0f} %" if isinstance(busy, int | float) else "",
        pool,
    )


def agent_loop_row(a: Mapping[str, Any], now: datetime) -> Row:
    row = agent_row(a, now)
    return (*row[:_LOOP_AT], *loop_cells(a.get("loop")), *row[_LOOP_AT:])


def where(stack: list[Mapping[str, Any]] | None) -> str:
    """``function (file:line)`` of the innermost app frame (the first one), else of the innermost frame."""
    if not stack:
        return ""
    top = next((f for f in stack if f.get("app")), stack[0])
    return f"{text(top.get('function'))} ({os.path.basename(text(top.get('file')))}:{text(top.get('line'))})"


def stack_text(stack: list[Mapping[str, Any]] | None) -> str:
    """The stack as plain text, one frame a line (app frames first, innermost first), code indented below."""
    lines = []
    for f in stack or []:
        mark = "app" if f.get("app") else "   "
        lines.append(f"{mark}  {text(f.get('file'))}:{text(f.get('line'))}  in {text(f.get('function'))}")
        if f.get("code"):
            lines.append(f"         {text(f.get('code'))}")
    return "\n".join(lines) or "(no stack: the loop came back before it could be taken)"


def stack_html(stack: str) -> str:
    """The expanded row: the stack's text, escaped, in a ``<pre>``."""
    return f"<pre style='margin:4px 12px;white-space:pre-wrap'>{escaped(stack)}</pre>"


STALL_COLUMNS = ("When (UTC)", "Host:PID", "App", "Session", "Duration", "Where", "Callback", "id")
STALL_ID = STALL_COLUMNS.index("id")
"""Where a row of :func:`stall_row` holds its stall's id (a hidden column)."""


def stall_row(s: Mapping[str, Any]) -> tuple[Any, ...]:
    duration = s.get("duration_s")
    shown = f"{duration:.2f} s" if isinstance(duration, int | float) else ""
    if not s.get("final"):
        shown += " (still blocked)"
    return (
        fmt_time(parse_time(s.get("started_at"))),
        f"{text(s.get('host'))}:{text(s.get('pid'))}",
        text(s.get("app_name")),
        text(s.get("session_id")),
        shown,
        where(s.get("stack")),
        text(s.get("function")),
        int(s.get("id") or 0),
    )


class StallsView:
    """The Stalls tab: newest first; expand a row for its stack."""

    title = "Stalls"

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.rows: list[tuple[Any, ...]] = []
        self.stacks: dict[int, str] = {}
        self._shown: tuple[Any, ...] | None = None
        self._fetched_at = 0.0
        self.status = pn.pane.HTML("", sizing_mode="stretch_width")
        self.table = pn.widgets.Tabulator(
            value=pd.DataFrame(columns=list(STALL_COLUMNS)),
            pagination="local",
            page_size=25,
            show_index=False,
            disabled=True,
            hidden_columns=["id"],
            formatters={c: {"type": "plaintext"} for c in STALL_COLUMNS},
            header_align="left",
            sizing_mode="stretch_width",
            row_content=self._stack_pane,
        )

    def _stack_pane(self, row: pd.Series) -> pn.viewable.Viewable:
        return pn.pane.HTML(stack_html(self.stacks.get(int(row["id"]), "")), sizing_mode="stretch_width")

    def panel(self) -> pn.viewable.Viewable:
        help_text = (
            "Each time a Panel process's IOLoop stopped running its probe for SESSION_MONITOR_STALL_S: "
            "every session of that process was frozen meanwhile. Expand a row for the loop thread's stack."
        )
        return pn.Column(
            pn.pane.HTML(escaped(help_text)), self.status, self.table, name=self.title, sizing_mode="stretch_width"
        )

    async def refresh(self) -> None:
        """Every second: a look at the newest stall only; the list is fetched again when that moved."""
        try:
            newest = await self.api.request("GET", "/stalls", params={"limit": 1})
            head = newest.data.get("stalls") or [{}]
            key = (newest.data.get("total"), head[0].get("id"), head[0].get("duration_s"), newest.data.get("dropped"))
            if key == self._shown and time.monotonic() - self._fetched_at < FULL_REFRESH_S:
                return
            fetched = await self.api.request("GET", "/stalls", params={"limit": STALLS_LIMIT})
        except RequestFailed as exc:
            self.status.object = f'<span style="color:#cf222e">{escaped(exc)}</span>'
            self._shown = None
            return
        self._shown, self._fetched_at = key, time.monotonic()
        stalls = list(fetched.data.get("stalls") or [])
        now = datetime.now(UTC)
        dropped = int(fetched.data.get("dropped") or 0)
        total = int(fetched.data.get("total") or 0)
        summary = f"{total:,} stall(s)" + (f", {dropped:,} dropped" if dropped else "")
        self.status.object = escaped(f"{summary} · updated {now:%H:%M:%S} UTC")
        rows = [stall_row(s) for s in stalls]
        if rows != self.rows:
            # Panel closes every expanded row when the rows change: the stacks the operator opened stay open.
            opened = {self.rows[i][STALL_ID] for i in self.table.expanded if i < len(self.rows)}
            self.stacks = {int(s.get("id") or 0): stack_text(s.get("stack")) for s in stalls}
            self.rows = rows
            self.table.value = pd.DataFrame.from_records(rows, columns=list(STALL_COLUMNS))
            self.table.expanded = [i for i, row in enumerate(rows) if row[STALL_ID] in opened]
