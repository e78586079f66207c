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

from session_monitor.dashboard.costs import COST_COLUMNS, cost_cells
from session_monitor.dashboard.safe import visible_controls

COLUMNS: tuple[str, ...] = (
    "session_id", "app", "user", "host", "state", "task", "task_for", "started", "duration", "last_seen",
    "visibility", "idle", "exempt", *COST_COLUMNS, "start_key", "task_key", "seen_key", "kill",
)  # fmt: skip
"""Columns of the sessions table, in order; ``session_id`` and the ``*_key`` columns are hidden. ``kill`` is the
Kill "button" (a data column, so it can be frozen at the right edge; Tabulator's button columns cannot)."""

KILL = "Kill"

TEXT_COLUMNS: tuple[str, ...] = ("app", "user", "host", "task", "visibility", "slowest")
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
    """Client text as shown: a plain string with its bidi controls made visible (escaping happens where it is
    displayed). :func:`~session_monitor.dashboard.safe.from_visible` gives back the original."""
    return "" if value is None else visible_controls(str(value))


@dataclass(frozen=True, slots=True)
class _Parsed:
    """What a row shows that does not depend on the time of the refresh, and its timestamps as epoch seconds."""

    head: tuple[str, str, str, str, str, str]
    """session_id, app, user, placement, state, task."""
    started: str
    visibility: str
    exempt: str
    """``exempt`` when idle culling and maximum age never end the session, else empty."""
    agent_id: str
    start_ts: float | None
    task_ts: float | None
    """Start of the running task; ``None`` when no task runs."""
    seen_ts: float | None
    interacted_ts: float | None
    idle_s: float | None
    """The server's idle seconds, for rows without ``last_interaction_at``."""
    cost: tuple[Any, ...]
    """The cost cells (``costs.py``)."""


def _ts(value: Any) -> float | None:
    parsed = parse_time(value)
    return parsed.timestamp() if parsed else None


def _parse(s: Mapping[str, Any]) -> _Parsed:
    start = parse_time(s.get("start_time"))
    task_ts = _ts(s.get("task_started_at")) if s.get("status") == "running" else None
    state = "killing" if s.get("kill_requested") else word(s.get("state"), "unknown")
    host, pid = s.get("host"), s.get("pid")
    placement = f"{text(host) or '?'}:{pid}" if pid is not None else text(host)
    idle_s = s.get("idle_seconds")
    return _Parsed(
        head=(
            str(s["session_id"]),
            text(s.get("app_name")),
            text(s.get("user_id")),
            placement,
            state,
            text(s.get("current_task")),
        ),
        started=fmt_time(start),
        visibility=word(s.get("visibility")),
        exempt="exempt" if s.get("exempt") is True else "",
        agent_id=text(s.get("agent_id")),
        start_ts=start.timestamp() if start else None,
        task_ts=task_ts,
        seen_ts=_ts(s.get("last_heartbeat")),
        interacted_ts=_ts(s.get("last_interaction_at")),
        idle_s=float(idle_s) if isinstance(idle_s, int | float) else None,
        cost=cost_cells(s),
    )


def _row(p: _Parsed, now_ts: float, agent_seen_ts: Mapping[str, float]) -> tuple[Any, ...]:
    seen_ts = p.seen_ts
    agent_ts = agent_seen_ts.get(p.agent_id) if p.agent_id else None
    if agent_ts is not None and (seen_ts is None or agent_ts > seen_ts):
        seen_ts = agent_ts
    seen_key, seen_text = seen_band(now_ts - seen_ts) if seen_ts is not None else (0, "")
    if p.interacted_ts is not None:
        idle_s: float | None = now_ts - p.interacted_ts
    elif p.idle_s is None and p.visibility and p.start_ts is not None:
        idle_s = now_ts - p.start_ts  # the page reports, but nobody has touched it since it opened
    else:
        idle_s = p.idle_s
    return (
        *p.head,
        fmt_duration(now_ts - p.task_ts) if p.task_ts is not None else "",
        p.started,
        fmt_duration(now_ts - p.start_ts) if p.start_ts is not None else "",
        seen_text,
        p.visibility,
        fmt_duration(idle_s),
        p.exempt,
        *p.cost,
        p.start_ts if p.start_ts is not None else 0.0,
        p.task_ts if p.task_ts is not None else math.nan,
        seen_key,
        KILL,
    )


def _agent_seen_ts(agent_seen: Mapping[str, Any] | None) -> dict[str, float]:
    return {str(k): ts for k, v in (agent_seen or {}).items() if (ts := _ts(v)) is not None}


def session_row(s: Mapping[str, Any], now: datetime, agent_seen: Mapping[str, Any] | None = None) -> tuple[Any, ...]:
    """One API session as a table row, in :data:`COLUMNS` order.

    ``agent_seen`` (agent id → its last sync) stands in for the heartbeat of agent-tracked sessions: a changes-only
    listing does not repeat rows whose only news is that their agent is alive. Idle time is counted from
    ``last_interaction_at`` for the same reason.
    """
    return _row(_parse(s), now.timestamp(), _agent_seen_ts(agent_seen))


class RowRenderer:
    """:func:`session_row` for a whole list, parsing each session's text and timestamps only when it changed.

    The feed keeps the same dict for a session until the server sends a new version of it, so the dict's
    identity tells whether the cached parse still holds; a refresh then computes only the time-dependent cells.
    """

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Mapping[str, Any], _Parsed]] = {}

    def rows_by_id(
        self, sessions: Iterable[Mapping[str, Any]], now: datetime, agent_seen: Mapping[str, Any] | None = None
    ) -> dict[str, tuple[Any, ...]]:
        now_ts, seen = now.timestamp(), _agent_seen_ts(agent_seen)
        old, cache = self._cache, {}
        out: dict[str, tuple[Any, ...]] = {}
        for s in sessions:
            sid = str(s["session_id"])
            hit = old.get(sid)
            parsed = hit[1] if hit is not None and hit[0] is s else _parse(s)
            cache[sid] = (s, parsed)
            out[sid] = _row(parsed, now_ts, seen)
        self._cache = cache
        return out


def rows_by_id(
    sessions: Iterable[Mapping[str, Any]], now: datetime, agent_seen: Mapping[str, Any] | None = None
) -> dict[str, tuple[Any, ...]]:
    return RowRenderer().rows_by_id(sessions, now, agent_seen)


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
