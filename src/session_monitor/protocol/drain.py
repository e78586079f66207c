"""Draining a Panel process for a deploy: the REST bodies and what agents learn in their sync answers.

A drained process is unready to load balancers (no new sessions), its live sessions are shown the message
and a countdown, and at the deadline they end as ``drained``. ``undrain`` makes it ready again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from session_monitor.protocol.common import (
    MAX_REASON,
    PRINTABLE_FORMAT,
    AppName,
    HostName,
    Pid,
    UTCTime,
    _not_blank,
    _Request,
)
from session_monitor.text import printable

MAX_DRAIN_S = 7 * 24 * 3600
"""Longest a drain deadline may lie ahead (7 days)."""

DRAIN = "drain"
"""Command kind: this agent's drain state changed; it syncs at once to learn it (the answer's ``drain``)."""

DrainMessage = Annotated[
    str,
    Field(min_length=1, max_length=MAX_REASON, json_schema_extra={"format": PRINTABLE_FORMAT, "pattern": r"\S"}),
    AfterValidator(printable),
    AfterValidator(_not_blank),
]


class DrainTarget(_Request):
    """Which Panel processes: ``host`` and ``pid`` (one process), ``host`` alone (all its processes), or ``app``
    (every process with a live session of that app). Only processes live now are chosen."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "oneOf": [
                {"required": ["host"], "not": {"required": ["app"]}},
                {"required": ["app"], "not": {"anyOf": [{"required": ["host"]}, {"required": ["pid"]}]}},
            ]
        },
    )

    host: HostName | SkipJsonSchema[None] = None
    pid: Pid | SkipJsonSchema[None] = None
    app: AppName | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _one_target(self) -> DrainTarget:
        if self.pid is not None and self.host is None:
            raise ValueError("pid needs host (a pid is only unique on its host)")
        if (self.host is None) == (self.app is None):
            raise ValueError("give host (with or without pid) or app, not both and not neither")
        return self

    def describe(self) -> str:
        """The target as the CLI writes it (``host:pid``, ``host``, ``app app``); for messages and the audit log."""
        if self.app is not None:
            return f"app {self.app}"
        return f"{self.host}:{self.pid}" if self.pid is not None else f"host {self.host}"


class DrainRequest(DrainTarget):
    """``POST /drain``: mark the target's processes draining until a deadline, with a message for their users."""

    deadline_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_DRAIN_S,
        allow_inf_nan=False,
        description="Seconds from now until the sessions end as `drained` (default 600). Or give `at`.",
    )
    at: UTCTime | None = Field(
        default=None, description="When the sessions end (ISO 8601 with offset): in the future, at most 7 days ahead."
    )
    message: DrainMessage | None = Field(
        default=None, description="Shown to the users of the drained processes with the countdown (text, ≤ 500)."
    )

    @model_validator(mode="after")
    def _one_deadline(self) -> DrainRequest:
        if self.deadline_s is not None and self.at is not None:
            raise ValueError("give deadline_s or at, not both")
        return self


class DrainInfo(BaseModel):
    """A process's drain: since when, until when, the message, and who asked."""

    started_at: datetime
    deadline: datetime
    message: str
    by: str


class DrainedProcess(BaseModel):
    agent_id: str
    host: str
    pid: int
    drain: DrainInfo | None


class DrainResponse(BaseModel):
    """The processes drained (or undrained) by the request."""

    count: int
    processes: list[DrainedProcess]
