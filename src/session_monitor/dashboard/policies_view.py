# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""The Policies tab (``GET /policies``): each session limit with the live sessions counted against it, and the
exemptions from idle culling and maximum age. Read-only: the policies are set with ``PUT /policies``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from session_monitor.dashboard.model import text
from session_monitor.dashboard.views import RecordsView, Row

POLICY_COLUMNS = ("Limit", "Applies to", "Live now", "At most", "Use")
TOP_USERS = 5
"""Users listed under a per-user limit: the ones with the most live sessions."""


def _use(live: int, limit: int) -> str:
    return f"{100 * live / limit:.0f} %" + (" (full)" if live >= limit else "")


def _users(counts: Mapping[str, Any], limit: int, what: str) -> list[dict[str, Any]]:
    top = sorted(counts.items(), key=lambda kv: (-int(kv[1]), kv[0]))[:TOP_USERS]
    if not top:
        return [{"limit": what, "target": "(no user has a live session)", "live": 0, "max": limit}]
    return [{"limit": what, "target": f"user {user}", "live": int(n), "max": limit} for user, n in top]


def policy_records(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One record per limit and target (the busiest users of a per-user limit), then the exemptions."""
    policies = answer.get("policies") or {}
    counts = answer.get("counts") or {}
    out: list[dict[str, Any]] = []
    per_process = policies.get("max_sessions_per_process")
    if per_process:
        for p in answer.get("processes") or []:
            target = f"process {text(p.get('host'))}:{text(p.get('pid'))}"
            out.append({"limit": "sessions per process", "target": target, "live": p.get("sessions", 0),
                        "max": per_process})  # fmt: skip
    for app, limits in sorted((policies.get("apps") or {}).items()):
        if limits.get("max_sessions"):
            out.append({"limit": "sessions of the app", "target": f"app {app}",
                        "live": (counts.get("apps") or {}).get(app, 0), "max": limits["max_sessions"]})  # fmt: skip
        if limits.get("max_sessions_per_user"):
            users = (counts.get("app_users") or {}).get(app) or {}
            per_user = _users(users, limits["max_sessions_per_user"], "sessions of the app per user")
            out += [{**r, "target": f"app {app}, {r['target']}"} for r in per_user]
    if policies.get("max_sessions_per_user"):
        out += _users(counts.get("users") or {}, policies["max_sessions_per_user"], "sessions per user, all apps")
    for user in policies.get("exempt_users") or []:
        out.append({"limit": "exempt from culling", "target": f"user {user}"})
    for app in policies.get("exempt_apps") or []:
        out.append({"limit": "exempt from culling", "target": f"app {app}"})
    return out


def policy_row(r: Mapping[str, Any], _now: datetime) -> Row:
    limit = r.get("max")
    if limit is None:
        return (text(r.get("limit")), text(r.get("target")), "", "", "")
    live = int(r.get("live") or 0)
    return (text(r.get("limit")), text(r.get("target")), f"{live:,}", f"{int(limit):,}", _use(live, int(limit)))


class PoliciesView(RecordsView):
    """The limits against the live counts; says when the policies were set and by whom."""

    def __init__(self, fetch_policies: Any) -> None:
        self._fetch_policies = fetch_policies
        self._set_by = ""
        super().__init__(
            "Policies",
            POLICY_COLUMNS,
            self._records,
            policy_row,
            help_text="Session limits with the live sessions counted against them; set with PUT /policies.",
        )

    async def _records(self) -> list[dict[str, Any]]:
        answer = await self._fetch_policies()
        when, who = answer.get("updated_at"), answer.get("updated_by")
        self._set_by = f"set {when[:19].replace('T', ' ')} UTC by {who}" if when else "no policies set"
        records = policy_records(answer)
        return records or [{"limit": "no limit set", "target": "every app, user and process"}]

    async def refresh(self) -> None:
        await super().refresh()
        if self._set_by:
            self._status_text = f"{self._status_text} · {text(self._set_by)}"
            self._show_status()
