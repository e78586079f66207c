"""The REST API's request and response bodies (the prototype's endpoints and the operators' reads).

The prototype's endpoints keep their exact field names; fields we add are optional in requests and additive in
responses, so the prototype's own client and dashboard keep working.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from session_monitor.protocol.common import (
    API_VERSION,
    AppName,
    HostName,
    Pid,
    Reason,
    Status,
    TaskName,
    UserId,
    UTCTime,
    _Request,
)
from session_monitor.protocol.measures import (
    SessionCost,
)
from session_monitor.protocol.notices import MAX_NOTICE_AHEAD_S


class SessionCreate(_Request):
    """``POST /sessions``: register a session (the prototype's body, plus optional placement)."""

    app_name: AppName
    user_id: UserId | None = None
    host: HostName | None = Field(default=None, description="Host name of the Panel process.")
    pid: Pid | None = Field(default=None, description="Process id of the Panel process.")


class SessionCreated(BaseModel):
    session_id: str


class StatusUpdate(_Request):
    """``PUT /sessions/{id}/status``: what the session is doing now."""

    status: Status = Field(description="`idle`, `running`, or another short lower-case word.")
    current_task: TaskName | None = None


class KillRequest(_Request):
    """Optional body of the kill endpoints: why, shown to the user and kept in the audit log.

    With ``delay_s`` or ``at`` (not both) the kill is given notice: the pages show a countdown, and the kill
    runs at the deadline unless cancelled (``DELETE /pending-kills/{id}``).
    """

    reason: Reason | None = None
    delay_s: float | None = Field(
        default=None, gt=0, le=MAX_NOTICE_AHEAD_S, strict=True, description="Kill in this many seconds (≤ 7 days)."
    )
    at: UTCTime | None = Field(default=None, description="Kill at this time (in the future, ≤ 7 days ahead).")


class StatusResponse(BaseModel):
    status: str


class KillResponse(StatusResponse):
    """``kill_requested``, or ``kill_scheduled`` with the pending kill's id and deadline."""

    pending_kill_id: int | None = None
    deadline: datetime | None = None


class HeartbeatResponse(BaseModel):
    kill_requested: bool


class KillAllResponse(BaseModel):
    killed_count: int = Field(description="Sessions killed now (0 for a kill with notice).")
    pending_kill_id: int | None = Field(default=None, description="With notice: the pending kill.")
    deadline: datetime | None = None
    live_count: int | None = Field(default=None, description="With notice: live sessions shown the countdown now.")


class CleanupResponse(BaseModel):
    deleted_count: int


class SessionOut(BaseModel):
    """One session as the API shows it; the first fields are the prototype's."""

    session_id: str
    app_name: str
    user_id: str | None
    start_time: datetime
    last_heartbeat: datetime
    duration_seconds: float
    status: str = Field(description="Status last reported by the session (`idle`, `running`, ...).")
    current_task: str | None
    is_stale: bool
    kill_requested: bool
    state: str = Field(description="`idle`, `running`, `disconnected` or `stale` while live; `ended` once ended.")
    host: str | None
    pid: int | None
    task_started_at: datetime | None
    task_seconds: float | None
    kill_requested_at: datetime | None
    kill_requested_by: str | None
    kill_reason: str | None
    ended_at: datetime | None
    end_reason: str | None
    ended_by: str | None
    agent_id: str | None = Field(description="The agent (Panel process) tracking it; null for prototype clients.")
    visibility: str | None = Field(default=None, description="`visible` or `hidden` as the page last reported it.")
    last_interaction_at: datetime | None = None
    idle_seconds: float | None = Field(
        default=None, description="Seconds since the user last interacted with the page, when the page reports it."
    )
    disconnected_at: datetime | None = Field(
        default=None, description="Since when the session has had no websocket (state `disconnected`)."
    )
    changed_at: datetime | None = Field(
        default=None, description="Last change other than a heartbeat; what `GET /sessions?changed_since=` compares."
    )
    cost: SessionCost | None = Field(default=None, description="What the session costs its process (agents only).")
    exempt: bool = Field(
        default=False, description="Idle culling and maximum age never end it (the app marked it, or a policy)."
    )


class SessionList(BaseModel):
    sessions: list[SessionOut]
    total: int = Field(description="Number of sessions matching the filters, whatever the page.")
    cursor: datetime | None = Field(
        default=None,
        description="Pass as `changed_since` next time to get only the sessions changed meanwhile.",
    )
    agent_last_seen: dict[str, datetime] | None = Field(
        default=None,
        description="With `changed_since`: each live agent's last sync, the heartbeat of all its sessions.",
    )


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    remote_addr: str | None


class AuditList(BaseModel):
    entries: list[AuditEntry]
    total: int


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable", "disk_full"] = Field(
        description="`unavailable`: it does not answer; `disk_full`: it answers reads but refuses writes."
    )
    version: str
    api_version: str = API_VERSION


class ErrorBody(BaseModel):
    """Every error response: ``detail`` says what is wrong in one line."""

    detail: str = Field(description="What is wrong, in one line.")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: `body`, `query`, `path` or `header`, then the field's path.")
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="A stable name for the kind of error (`greater_than_equal`, `missing`, ...).")


class ValidationErrorBody(BaseModel):
    """422: ``detail`` sums up the first few problems in one line; ``errors`` lists each (never the input)."""

    detail: str = Field(description="`field: problem` for the first few problems, in one line.")
    errors: list[FieldError] = Field(default_factory=list)
