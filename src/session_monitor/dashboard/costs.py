"""What sessions cost and what ended ones left running, as dashboard cells. No Panel here.

Cost cells are numbers (seconds, MB, counts) rounded coarsely, so the Sessions table sorts them as numbers
and a row changes only when its cost moved visibly; a session not measured yet has NaN there, shown as an empty
cell (:data:`NUMBER_FORMATS`).
The slowest callback's name and leftovers' names are client text: shown through the plaintext formatter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def text(value: Any) -> str:
    """Client text as a plain string (escaping happens where it is displayed)."""
    return "" if value is None else str(value)


COST_COLUMNS: tuple[str, ...] = (
    "loop_1m", "loop_total", "pool_s", "callbacks", "slowest", "doc_mb", "threads", "jobs",
)  # fmt: skip
"""The Sessions table's cost columns, in order (after the others, before the hidden sort keys)."""

COST_TITLES: dict[str, str] = {
    "loop_1m": "Loop 1m (s)",
    "loop_total": "Loop total (s)",
    "pool_s": "Pool (s)",
    "callbacks": "Callbacks",
    "slowest": "Slowest callback",
    "doc_mb": "Doc data (MB)",
    "threads": "Threads",
    "jobs": "Pool jobs",
}

NUMBER_FORMATS: dict[str, str] = {
    "loop_1m": "0.[00]", "loop_total": "0.[00]", "pool_s": "0.[00]", "callbacks": "0,0", "doc_mb": "0,0.[0]",
    "threads": "0,0", "jobs": "0,0",
}  # fmt: skip
"""The numeric cost columns' formats (numbro's, as Bokeh's ``NumberFormatter`` takes them); a session not measured
yet has NaN there, shown as an empty cell."""

_NONE = (math.nan,) * 4 + ("",) + (math.nan,) * 3


def _num(value: Any, digits: int) -> float:
    return round(float(value), digits) if isinstance(value, int | float) else math.nan


def cost_cells(s: Mapping[str, Any]) -> tuple[Any, ...]:
    """The cost cells of one API session row, in :data:`COST_COLUMNS` order."""
    cost = s.get("cost")
    if not isinstance(cost, Mapping):
        return _NONE
    slowest = cost.get("slowest_callback")
    slow = ""
    if isinstance(slowest, Mapping):
        slow = f"{text(slowest.get('qualname'))} ({_num(slowest.get('duration_s'), 2):g} s)"
    data = cost.get("doc_data_bytes")
    return (
        _num(cost.get("loop_seconds_1m"), 2),
        _num(cost.get("loop_seconds_total"), 2),
        _num(cost.get("pool_thread_seconds"), 2),
        _num(cost.get("callbacks_total"), 0),
        slow,
        _num(data / 1e6, 1) if isinstance(data, int | float) else math.nan,
        _num(cost.get("threads_alive"), 0),
        _num(cost.get("pool_jobs"), 0),
    )


def leftovers_text(a: Mapping[str, Any]) -> str:
    """A process's leftovers in one cell: ``2 leftovers: thread cruncher (app.crunch); ...``; ``""`` if none."""
    items = [x for x in a.get("leftovers") or () if isinstance(x, Mapping)]
    if not items:
        return ""
    parts = [
        f"{text(x.get('kind')).replace('_', ' ')} {text(x.get('name'))} ({text(x.get('function'))})" for x in items
    ]
    return f"{len(items)} leftover{'s' if len(items) > 1 else ''}: " + "; ".join(parts)
