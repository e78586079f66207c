"""Idle culling and maximum age for one watched session: which limits apply and whether it is past one.

A tracker's own ``idle_timeout_s``/``max_session_age_s`` beat the process's liveness settings (per app); an exempt
session (``tracker.exempt()``, or a policy exempting its app or user) is never culled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from session_monitor.client.liveness import LivenessConfig, Watch, expiry


class Cullable(Protocol):
    """What culling reads of a tracker."""

    app_name: str
    idle_timeout_s: float | None
    max_session_age_s: float | None

    @property
    def is_exempt(self) -> bool: ...
    @property
    def status(self) -> str: ...
    @property
    def started_at(self) -> datetime: ...
    @property
    def last_interaction_at(self) -> datetime | None: ...


def expired(tracker: Cullable, watch: Watch, now: datetime, config: LivenessConfig) -> str | None:
    """Why the session has expired at ``now`` (``None``: it has not); a running task counts as activity."""
    if tracker.is_exempt:
        return None
    idle_s = tracker.idle_timeout_s
    if idle_s is None:
        idle_s = config.idle_timeout_s.for_app(tracker.app_name)
    max_age_s = tracker.max_session_age_s
    if max_age_s is None:
        max_age_s = config.max_session_age_s.for_app(tracker.app_name)
    if not idle_s and not max_age_s:
        return None
    running = tracker.status == "running"
    if running:
        watch.busy_at = now
    activity = [t for t in (tracker.last_interaction_at, watch.busy_at) if t is not None]
    return expiry(
        now,
        started_at=tracker.started_at,
        last_activity_at=max(activity) if activity else None,
        running=running,
        idle_timeout_s=idle_s,
        max_session_age_s=max_age_s,
    )
