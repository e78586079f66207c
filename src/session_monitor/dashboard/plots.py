# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""Plots: live sessions per app over the last hour and day, sessions ended by reason, running task durations.

Bokeh draws legend labels and axis factors on a canvas, as text; no plot has an HTML tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import panel as pn
from bokeh.core.validation import silence
from bokeh.core.validation.warnings import MISSING_RENDERERS
from bokeh.models import ColumnDataSource, FactorRange, Legend  # type: ignore[attr-defined]
from bokeh.palettes import Category10
from bokeh.plotting import figure

from session_monitor.dashboard.client import ApiClient
from session_monitor.dashboard.model import parse_time
from session_monitor.dashboard.safe import escaped
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
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"


# A timeline with no app yet has no glyph: expected, not worth a warning on every page load.
silence(MISSING_RENDERERS, True)


def timeline_figure(data: Mapping[str, Any], title: str) -> figure:
    times = [t for t in (parse_time(v) for v in data.get("times", [])) if t is not None]
    fig = figure(title=title, x_axis_type="datetime", height=300, sizing_mode="stretch_width", toolbar_location=None)
    fig.yaxis.axis_label = "live sessions"
    legend_items = []
    apps: Mapping[str, list[int]] = data.get("apps", {})
    for i, (app, counts) in enumerate(apps.items()):
        colour = Category10[10][i % 10]
        renderer = fig.step(x=times, y=counts, line_width=2, color=colour, mode="after")
        legend_items.append((_label(app), [renderer]))
    if legend_items:
        fig.add_layout(Legend(items=legend_items, location="top_left", click_policy="hide"), "right")
    return fig


def task_histogram(task_seconds: Iterable[float]) -> dict[str, int]:
    """Running tasks per duration bin, every bin present (in order)."""
    counts = {label: 0 for _, label in TASK_BINS}
    for s in task_seconds:
        for bound, label in TASK_BINS:
            if s < bound:
                counts[label] += 1
                break
    return counts


def bar_figure(counts: Mapping[str, int], title: str, y_label: str) -> figure:
    factors = list(counts)
    source = ColumnDataSource({"x": factors, "y": [counts[f] for f in factors]})
    fig = figure(
        x_range=FactorRange(factors=factors),
        title=title,
        height=300,
        sizing_mode="stretch_width",
        toolbar_location=None,
    )
    fig.vbar(x="x", top="y", width=0.8, source=source, color="#4c72b0")
    fig.yaxis.axis_label = y_label
    fig.y_range.start = 0  # type: ignore[attr-defined]
    return fig


class PlotsView:
    """The plots tab; the timelines come from ``GET /stats/timeline``, task durations from the live list."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client
        self.status = pn.pane.HTML("", sizing_mode="stretch_width")
        self.hour = pn.pane.Bokeh(timeline_figure({}, "Live sessions per app, last hour"), sizing_mode="stretch_width")
        self.day = pn.pane.Bokeh(timeline_figure({}, "Live sessions per app, last day"), sizing_mode="stretch_width")
        self.ended = pn.pane.Bokeh(
            bar_figure(dict.fromkeys(END_REASONS, 0), "Sessions ended by reason, last day", "sessions"),
            sizing_mode="stretch_width",
        )
        self.tasks = pn.pane.Bokeh(
            bar_figure(task_histogram([]), "Running tasks by how long they have run", "tasks"),
            sizing_mode="stretch_width",
        )
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
        for key, pane, make in (
            ("hour", self.hour, lambda: timeline_figure(hour, "Live sessions per app, last hour")),
            ("day", self.day, lambda: timeline_figure(day, "Live sessions per app, last day")),
            ("ended", self.ended, lambda: bar_figure(reasons, "Sessions ended by reason, last day", "sessions")),
            ("tasks", self.tasks, lambda: bar_figure(tasks, "Running tasks by how long they have run", "tasks")),
        ):
            value = {"hour": hour, "day": day, "ended": reasons, "tasks": tasks}[key]
            if self._last.get(key) != value:
                self._last[key] = value
                pane.object = make()
