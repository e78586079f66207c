# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""Plots: live sessions per app over the last hour and day, sessions ended by reason, running task durations.

Each figure is made once per page and then only its data changes (a ``ColumnDataSource`` update, and the bar
charts' factors): a figure rebuilt on every refresh would leave all its old models in the browser's Bokeh
document, which never lets go of a model it was sent (an open page grew ~180 models a minute that way).
Bokeh draws legend labels and axis factors on a canvas, as text; no plot has an HTML tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import panel as pn
from bokeh.models import ColumnDataSource, FactorRange
from bokeh.palettes import Category10
from bokeh.plotting import figure

from session_monitor.dashboard.client import ApiClient
from session_monitor.dashboard.model import parse_time
from session_monitor.dashboard.safe import escaped, visible_controls
from session_monitor.errors import RequestFailed
from session_monitor.protocol import END_REASONS

WINDOWS: dict[str, tuple[float, float]] = {"Last hour": (3600.0, 60.0), "Last day": (86400.0, 900.0)}
"""Timeline windows: (window_s, step_s)."""

TASK_BINS: tuple[tuple[float, str], ...] = (
    (10, "< 10 s"),
    (60, "10–60 s"),
    (300, "1–5 min"),
    (1800, "5–30 min"),
    (7200, "30 min–2 h"),
    (math.inf, "> 2 h"),
)
MAX_LABEL = 40
"""Legend labels are cut to this many characters."""


def _label(name: str) -> str:
    name = visible_controls(name)
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"


def timeline_data(data: Mapping[str, Any]) -> dict[str, list[Any]]:
    """One stepped line per app (``xs`` in epoch milliseconds), for a ``multi_line`` with a legend by ``app``."""
    times_ms = [t.timestamp() * 1000 for t in (parse_time(v) for v in data.get("times", [])) if t is not None]
    out: dict[str, list[Any]] = {"xs": [], "ys": [], "app": [], "color": []}
    apps: Mapping[str, list[int]] = data.get("apps", {})
    for i, (app, counts) in enumerate(apps.items()):
        xs: list[float] = []
        ys: list[int] = []
        for j, (t, c) in enumerate(zip(times_ms, counts, strict=False)):
            if j:  # a step: the count holds until the next time
                xs.append(t)
                ys.append(ys[-1])
            xs.append(t)
            ys.append(c)
        out["xs"].append(xs)
        out["ys"].append(ys)
        out["app"].append(_label(str(app)))
        out["color"].append(Category10[10][i % 10])
    return out


def timeline_figure(title: str) -> tuple[figure, ColumnDataSource]:
    source = ColumnDataSource(timeline_data({}))
    fig = figure(title=title, x_axis_type="datetime", height=300, sizing_mode="stretch_width", toolbar_location=None)
    fig.yaxis.axis_label = "live sessions"
    fig.multi_line(xs="xs", ys="ys", color="color", line_width=2, source=source, legend_field="app")
    legend = fig.legend[0]
    legend.location = "top_left"
    fig.add_layout(legend, "right")
    return fig, source


def task_histogram(task_seconds: Iterable[float]) -> dict[str, int]:
    """Running tasks per duration bin, every bin present (in order)."""
    counts = {label: 0 for _, label in TASK_BINS}
    for s in task_seconds:
        for bound, label in TASK_BINS:
            if s < bound:
                counts[label] += 1
                break
    return counts


def bar_data(counts: Mapping[str, int]) -> dict[str, list[Any]]:
    return {"x": list(counts), "y": list(counts.values())}


def bar_figure(counts: Mapping[str, int], title: str, y_label: str) -> tuple[figure, ColumnDataSource, FactorRange]:
    source = ColumnDataSource(bar_data(counts))
    factors = FactorRange(factors=list(counts))
    fig = figure(
        x_range=factors,
        title=title,
        height=300,
        sizing_mode="stretch_width",
        toolbar_location=None,
    )
    fig.vbar(x="x", top="y", width=0.8, source=source, color="#4c72b0")
    fig.yaxis.axis_label = y_label
    fig.y_range.start = 0  # type: ignore[attr-defined]
    return fig, source, factors


class PlotsView:
    """The plots tab; the timelines come from ``GET /stats/timeline``, task durations from the live list."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.status = pn.pane.HTML("", sizing_mode="stretch_width")
        hour, self._hour = timeline_figure("Live sessions per app, last hour")
        day, self._day = timeline_figure("Live sessions per app, last day")
        ended, self._ended, ended_range = bar_figure(
            dict.fromkeys(END_REASONS, 0), "Sessions ended by reason, last day", "sessions"
        )
        tasks, self._tasks, tasks_range = bar_figure(
            task_histogram([]), "Running tasks by how long they have run", "tasks"
        )
        self._ranges = {"ended": ended_range, "tasks": tasks_range}
        self.hour = pn.pane.Bokeh(hour, sizing_mode="stretch_width")
        self.day = pn.pane.Bokeh(day, sizing_mode="stretch_width")
        self.ended = pn.pane.Bokeh(ended, sizing_mode="stretch_width")
        self.tasks = pn.pane.Bokeh(tasks, sizing_mode="stretch_width")
        self._last: dict[str, Any] = {}

    def panel(self) -> pn.viewable.Viewable:
        return pn.Column(
            self.status,
            pn.Row(self.hour, self.day, sizing_mode="stretch_width"),
            pn.Row(self.ended, self.tasks, sizing_mode="stretch_width"),
            name="Plots",
            sizing_mode="stretch_width",
        )

    async def refresh(self, sessions: list[dict[str, Any]] | None) -> None:
        now = datetime.now().astimezone()
        try:
            hour = await self.client.timeline(*WINDOWS["Last hour"])
            day = await self.client.timeline(*WINDOWS["Last day"])
        except RequestFailed as exc:
            self.status.object = f'<span style="color:#cf222e">{escaped(exc)}</span>'
            return
        self.status.object = f"updated {now:%H:%M:%S}"
        reasons = {r: int(day.get("ended_by_reason", {}).get(r, 0)) for r in END_REASONS}
        tasks = task_histogram(
            float(s["task_seconds"]) for s in sessions or [] if isinstance(s.get("task_seconds"), int | float)
        )
        for key, source, value, make in (
            ("hour", self._hour, hour, timeline_data),
            ("day", self._day, day, timeline_data),
            ("ended", self._ended, reasons, bar_data),
            ("tasks", self._tasks, tasks, bar_data),
        ):
            if self._last.get(key) == value:
                continue
            self._last[key] = value
            source.data = make(value)
            if key in self._ranges:
                factors = list(value)
                if list(self._ranges[key].factors) != factors:
                    self._ranges[key].factors = factors
