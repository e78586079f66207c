"""Session rows as the dashboard shows them, and what changed between two refreshes. No Panel here.

A row holds display text only, plus sort keys that move only when what they stand for moves: durations are
shown coarsely (seconds for the first minute, then minutes), and the last heartbeat in bands, so a session that
is merely alive does not change its row every second. A refresh then sends the browser only the rows that look
different.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

COLUMNS: tuple[str, ...] = (
    "session_id", "app", "user", "host", "state", "task", "task_for", "started", "duration", "last_seen",
    "visibility", "idle", "start_key", "task_key", "seen_key",
)  # fmt: skip
"""Columns of the sessions table, in order; ``session_id`` and the ``*_key`` columns are hidden."""

TEXT_COLUMNS: tuple[str, ...] = ("app", "user", "host", "task", "visibility")
"""Columns holding text that clients chose (shown through Tabulator's escaping plaintext formatter)."""

SORT_KEYS: dict[str, tuple[str, bool]] = {
    "task_for": ("task_key", True),
    "duration": ("start_key", True),
    "started": ("start_key", False),
    "last_seen": ("seen_key", False),
}
"""Display column → (key column, reversed): a longer duration is an earlier start."""

STATES: tuple[str, ...] = ("idle", "running", "stale", "disconnected", "killing")
STATE_COLOURS: dict[str, str] = {
    "idle": "#1a7f37",
    "running": "#b35900",
    "stale": "#cf222e",
    "disconnected": "#6e7781",
    "killing": "#8250df",
}
"""Text colours of the state column: idle green, running amber, stale red, disconnected grey."""

_WORD = re.compile(r"[a-z][a-z0-9_-]{0,31}")
SEEN_BANDS_S: tuple[int, ...] = (15, 30, 60)
"""Upper bounds of the first "last heartbeat" bands; beyond them whole minutes, then hours."""


def state_html() -> dict[str, str]:
    """Tabulator ``lookup`` formatter parameters: fixed markup per known state (no client text in it)."""
    return {
        s: f'<span style="color:{c};font-weight:600" title="{s}">&#9679; {s}</span>' for s, c in STATE_COLOURS.items()
    }


def word(value: Any, default: str = "") -> str:
    """A state or visibility word as shown: only ``[a-z][a-z0-9_-]*``, anything else becomes ``default``."""
    return value if isinstance(value, str) and _WORD.fullmatch(value) else default


def fmt_duration(seconds: float | None) -> str:
    """``42s``, ``17m``, ``3h05m``, ``2d04h``; ``""`` when unknown. Changes at most once a minute after the first."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def seen_band(seconds_ago: float) -> tuple[int, str]:
    """The band of a heartbeat ``seconds_ago``: ``(sort key, text)``, e.g. ``(15, "< 30s ago")``."""
    s = max(seconds_ago, 0)
    low = 0
    for bound in SEEN_BANDS_S:
        if s < bound:
            return low, f"< {bound}s ago"
        low = bound
    if s < 3600:
        return int(s // 60) * 60, f"{int(s // 60)}m ago"
    return int(s // 3600) * 3600, f"{int(s // 3600)}h ago"


def parse_time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def fmt_time(value: datetime | None) -> str:
    """UTC, sortable as text: ``2026-01-01 12:00:05``."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


def text(value: Any) -> str:
    """Client text as a plain string (escaping happens where it is displayed)."""
    return "" if value is None else str(value)


def session_row(s: Mapping[str, Any], now: datetime, agent_seen: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
    """One API session as a table row, in :data:`COLUMNS` order.

    ``agent_seen`` (agent id → its last sync) stands in for the heartbeat of agent-tracked sessions: a changes-only
    listing does not repeat rows whose only news is that their agent is alive. Idle time is counted from
    ``last_interaction_at`` for the same reason.
    """
    start = parse_time(s.get("start_time"))
    seen = parse_time(s.get("last_heartbeat"))
    agent_at = parse_time(agent_seen.get(s.get("agent_id") or "")) if agent_seen else None
    if agent_at is not None and (seen is None or agent_at > seen):
        seen = agent_at
    task_started = parse_time(s.get("task_started_at"))
    state = "killing" if s.get("kill_requested") else word(s.get("state"), "unknown")
    host, pid = s.get("host"), s.get("pid")
    placement = f"{text(host) or '?'}:{pid}" if pid is not None else text(host)
    seen_key, seen_text = seen_band((now - seen).total_seconds()) if seen else (0, "")
    running = task_started is not None and s.get("status") == "running"
    interacted = parse_time(s.get("last_interaction_at"))
    idle_s = (now - interacted).total_seconds() if interacted else s.get("idle_seconds")
    return (
        str(s["session_id"]),
        text(s.get("app_name")),
        text(s.get("user_id")),
        placement,
        state,
        text(s.get("current_task")),
        fmt_duration((now - task_started).total_seconds()) if running and task_started else "",
        fmt_time(start),
        fmt_duration((now - start).total_seconds()) if start else "",
        seen_text,
        word(s.get("visibility")),
        fmt_duration(float(idle_s)) if isinstance(idle_s, int | float) else "",
        start.timestamp() if start else 0.0,
        task_started.timestamp() if running and task_started else math.nan,
        seen_key,
    )


def rows_by_id(
    sessions: Iterable[Mapping[str, Any]], now: datetime, agent_seen: Mapping[str, Any] | None = None
) -> dict[str, tuple[Any, ...]]:
    return {row[0]: row for row in (session_row(s, now, agent_seen) for s in sessions)}


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


@dataclass
class Diff:
    """What one refresh changes: sessions added and removed, and the cells that differ in the others."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: dict[str, dict[int, Any]] = field(default_factory=dict)
    """session id → {column position: new value}."""

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    @property
    def cells(self) -> int:
        return sum(len(c) for c in self.changed.values())


def diff_rows(old: Mapping[str, tuple[Any, ...]], new: Mapping[str, tuple[Any, ...]]) -> Diff:
    """Compare two snapshots keyed by session id; order of ``added`` follows ``new``."""
    diff = Diff(
        added=[sid for sid in new if sid not in old],
        removed=[sid for sid in old if sid not in new],
    )
    for sid, row in new.items():
        before = old.get(sid)
        if before is None or before == row:
            continue
        cells = {i: v for i, (a, v) in enumerate(zip(before, row, strict=True)) if not _same(a, v)}
        if cells:
            diff.changed[sid] = cells
    return diff


def app_counts(rows: Iterable[tuple[Any, ...]]) -> dict[str, int]:
    """Live sessions per app, for Kill all's choices and confirmation."""
    app = COLUMNS.index("app")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[app]] = counts.get(row[app], 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: kv[0].lower()))
