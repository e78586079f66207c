"""Liveness settings: the reconnect grace, dead-socket timing, idle culling and maximum age, per app.

Explicit argument > ``SESSION_MONITOR_*`` variable > default, read through :mod:`session_monitor.client.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from session_monitor.client.config import env_setting, positive_float
from session_monitor.errors import ConfigError

DISCONNECT_GRACE_S = 2.0
"""A session without websocket for this long is ended as ``browser_lost`` (``SESSION_MONITOR_DISCONNECT_GRACE_S``)."""

DEAD_SOCKET_S = 60.0
"""A websocket that answered no ping for this long is closed as dead (``SESSION_MONITOR_DEAD_SOCKET_S``)."""

MAX_SWEEP_INTERVAL_S = 5.0
"""Pings, dead-socket and idle checks run this often at most (more often if ``dead_socket_s`` is short)."""


@dataclass(frozen=True)
class AppSeconds:
    """A duration per app: ``"1800"`` (every app), ``"1800,admin=0,reports=600"``; 0 or absent means off."""

    default: float | None = None
    per_app: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, name: str, text: str | None) -> AppSeconds:
        default: float | None = None
        per_app: dict[str, float] = {}
        for part in (text or "").split(","):
            part = part.strip()
            if not part:
                continue
            app, sep, raw = part.rpartition("=")
            try:
                value = float(raw)
            except ValueError:
                raise ConfigError(f"{name}: {raw!r} in {text!r} is not a number of seconds") from None
            if value < 0:
                raise ConfigError(f"{name}: {part!r} must not be negative")
            if not sep or app.strip() == "*":
                default = value
            else:
                per_app[app.strip()] = value
        return cls(default, tuple(per_app.items()))

    def for_app(self, app_name: str) -> float | None:
        """The value for ``app_name``; ``None`` when off."""
        value = dict(self.per_app).get(app_name, self.default)
        return value if value else None


@dataclass(frozen=True)
class LivenessConfig:
    """Liveness settings of a process: explicit argument > environment variable > default.

    Attributes:
        disconnect_grace_s: Seconds without websocket before ``browser_lost`` (default 2).
        dead_socket_s: Seconds without pong before a websocket counts as dead (default 60).
        idle_timeout_s: Idle culling per app (``SESSION_MONITOR_IDLE_TIMEOUT_S``, default off).
        max_session_age_s: Maximum session age per app (``SESSION_MONITOR_MAX_SESSION_AGE_S``, default off).
    """

    disconnect_grace_s: float = DISCONNECT_GRACE_S
    dead_socket_s: float = DEAD_SOCKET_S
    idle_timeout_s: AppSeconds = field(default_factory=AppSeconds)
    max_session_age_s: AppSeconds = field(default_factory=AppSeconds)

    @property
    def sweep_interval_s(self) -> float:
        return min(MAX_SWEEP_INTERVAL_S, self.dead_socket_s / 4)


def resolve_liveness(
    disconnect_grace_s: float | None = None,
    dead_socket_s: float | None = None,
    idle_timeout_s: str | None = None,
    max_session_age_s: str | None = None,
) -> LivenessConfig:
    """Build the liveness settings from arguments, else ``SESSION_MONITOR_*`` variables, else the defaults."""
    idle, max_age = "SESSION_MONITOR_IDLE_TIMEOUT_S", "SESSION_MONITOR_MAX_SESSION_AGE_S"
    return LivenessConfig(
        disconnect_grace_s=env_setting(
            "SESSION_MONITOR_DISCONNECT_GRACE_S", DISCONNECT_GRACE_S, positive_float, disconnect_grace_s or None
        ),
        dead_socket_s=env_setting(
            "SESSION_MONITOR_DEAD_SOCKET_S", DEAD_SOCKET_S, positive_float, dead_socket_s or None
        ),
        idle_timeout_s=AppSeconds.parse(idle, env_setting(idle, None, str, idle_timeout_s or None)),
        max_session_age_s=AppSeconds.parse(max_age, env_setting(max_age, None, str, max_session_age_s or None)),
    )


def expiry(
    now: datetime,
    *,
    started_at: datetime,
    last_activity_at: datetime | None,
    running: bool,
    idle_timeout_s: float | None,
    max_session_age_s: float | None,
) -> str | None:
    """Why the session should end as ``expired`` now, or ``None``.

    Activity is the later of the start, the last interaction the page reported and the last time a
    task was seen running; a running task is never idle. The maximum age applies whatever runs.
    """
    age_s = (now - started_at).total_seconds()
    if max_session_age_s and age_s >= max_session_age_s:
        return f"older than the maximum session age of {_human(max_session_age_s)}"
    if idle_timeout_s and not running:
        active = max(started_at, last_activity_at) if last_activity_at else started_at
        if (now - active).total_seconds() >= idle_timeout_s:
            return f"no interaction for {_human(idle_timeout_s)}"
    return None


def _human(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
