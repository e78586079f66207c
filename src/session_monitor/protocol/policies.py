"""Policies: session limits (per app, per user, per Panel process) and culling exemptions.

Set with ``PUT /policies`` (admin), stored in the database, carried to every agent in its sync answer
with the counts of the sessions live on the *other* processes, so an agent decides on its own, without
waiting on the network, whether a new session may start.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from session_monitor.protocol.common import MAX_USER_ID, PRINTABLE_FORMAT, AppName, JSONInteger, _not_blank
from session_monitor.text import printable

MAX_LIMIT = 1_000_000
"""Largest value of any session limit."""
MAX_POLICY_APPS = 1_000
"""Most apps with their own limits."""
MAX_EXEMPT = 1_000
"""Most exempt users, and most exempt apps."""

ExemptUser = Annotated[
    str,
    Field(min_length=1, max_length=MAX_USER_ID, json_schema_extra={"format": PRINTABLE_FORMAT, "pattern": r"\S"}),
    AfterValidator(printable),
    AfterValidator(_not_blank),
]

Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="At most this many live sessions."), JSONInteger]


class _Policy(BaseModel):
    # A misspelt field must be refused, not ignored: an operator setting ``max_session`` would believe
    # the limit is on.
    model_config = ConfigDict(extra="forbid")


class AppLimits(_Policy):
    """The limits of one app; ``null``: no limit."""

    max_sessions: Limit | None = Field(default=None, description="Live sessions of the app, all processes.")
    max_sessions_per_user: Limit | None = Field(default=None, description="Live sessions of the app per user.")


class Policies(_Policy):
    """``PUT /policies`` replaces them all; ``GET /policies`` shows them with the counts against each limit.

    Limits count live sessions (registered: their first websocket connected). A session over any limit is
    refused: the user gets a page saying why, and the session ends as ``refused``. Sessions without a user
    are not counted against the per-user limits.
    """

    apps: dict[AppName, AppLimits] = Field(
        default_factory=dict, max_length=MAX_POLICY_APPS, description="Limits by app name."
    )
    max_sessions_per_user: Limit | None = Field(
        default=None, description="Live sessions of one user, all apps and processes together."
    )
    max_sessions_per_process: Limit | None = Field(
        default=None, description="Live sessions of one Panel process, all apps together."
    )
    exempt_users: list[ExemptUser] = Field(
        default_factory=list,
        max_length=MAX_EXEMPT,
        json_schema_extra={"uniqueItems": True},
        description="Users whose sessions idle culling and maximum age never end (admins).",
    )
    exempt_apps: list[AppName] = Field(
        default_factory=list,
        max_length=MAX_EXEMPT,
        json_schema_extra={"uniqueItems": True},
        description="Apps whose sessions idle culling and maximum age never end (kiosk displays).",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Policies:
        for name in ("exempt_users", "exempt_apps"):
            values: list[str] = getattr(self, name)
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"{name} lists {repeated[0]!r} more than once")
        return self

    @property
    def has_limits(self) -> bool:
        return (
            self.max_sessions_per_user is not None
            or self.max_sessions_per_process is not None
            or any(a.max_sessions is not None or a.max_sessions_per_user is not None for a in self.apps.values())
        )


class LiveCounts(BaseModel):
    """Live sessions counted against the limits (only what some limit needs)."""

    apps: dict[str, int] = Field(default_factory=dict, description="By app (apps with `max_sessions`).")
    app_users: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="By app, then user (apps with `max_sessions_per_user`)."
    )
    users: dict[str, int] = Field(default_factory=dict, description="By user, all apps (`max_sessions_per_user`).")


class ProcessCount(BaseModel):
    agent_id: str
    host: str
    pid: int
    sessions: int


class PoliciesOut(BaseModel):
    """``GET /policies``: the policies, who set them and when, and the live counts against each limit."""

    policies: Policies
    updated_at: datetime | None = Field(description="When they were last set; null: never set.")
    updated_by: str | None
    counts: LiveCounts = Field(description="Live sessions in the whole cluster, against each limit.")
    processes: list[ProcessCount] = Field(
        default_factory=list, description="Live sessions of each live Panel process (`max_sessions_per_process`)."
    )
