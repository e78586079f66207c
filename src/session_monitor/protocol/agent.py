"""The agent protocol: one agent per Panel process syncs its sessions and long-polls for commands."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from session_monitor.protocol.common import (
    MAX_SYNC_SESSIONS,
    AppName,
    CommandLine,
    EndReason,
    Flag,
    HostName,
    JSONInteger,
    Pid,
    SessionIdField,
    ShortText,
    Status,
    TaskName,
    UserId,
    UTCTime,
    Visibility,
    _Request,
)
from session_monitor.protocol.config import ConfigChanges, ConfigFollow
from session_monitor.protocol.drain import DrainInfo
from session_monitor.protocol.measures import (
    MAX_LEFTOVERS,
    MAX_SYNC_STALLS,
    Leftover,
    LoopHealth,
    LoopHealthOut,
    SessionCost,
    Stall,
)
from session_monitor.protocol.notices import Notice
from session_monitor.protocol.policies import LiveCounts, Policies


class AgentInfo(_Request):
    """Facts about the Panel process an agent lives in (the system status view)."""

    host: HostName
    pid: Pid
    command: CommandLine = ""
    versions: dict[ShortText, ShortText] = Field(default_factory=dict, max_length=16)
    cpu_percent: float | None = Field(default=None, ge=0, le=100_000, strict=True)
    rss_bytes: Annotated[int, Field(ge=0, le=2**50), JSONInteger] | None = None
    started_at: UTCTime
    leftovers: list[Leftover] = Field(
        default_factory=list, max_length=MAX_LEFTOVERS, description="What ended sessions left running."
    )
    loop: LoopHealth | None = Field(default=None, description="Health of the process's IOLoop since the last sync.")


class TrackedSession(_Request):
    """A live session's current state as its agent knows it."""

    session_id: SessionIdField
    app_name: AppName
    user_id: UserId | None = None
    status: Status = "idle"
    current_task: TaskName | None = None
    task_started_at: UTCTime | None = None
    started_at: UTCTime
    visibility: Visibility | None = Field(default=None, description="Page visibility, once the page reported it.")
    last_interaction_at: UTCTime | None = Field(
        default=None, description="When the user last interacted with the page (pointer, key, scroll, touch)."
    )
    disconnected_at: UTCTime | None = Field(
        default=None, description="Since when the session has no websocket (inside the reconnect grace); else null."
    )
    cost: SessionCost | None = Field(default=None, description="What the session costs, once measured.")
    exempt: Flag = Field(
        default=False, description="Idle culling and maximum age never end it (marked by the app, or by policy)."
    )


class SessionEnd(_Request):
    session_id: SessionIdField
    reason: EndReason
    ended_at: UTCTime


class SyncRequest(_Request):
    """``POST /agents/{agent_id}/sync``: everything that changed since the last sync, in one request.

    Every sync is also the heartbeat of all the agent's live sessions. ``full`` says ``sessions``
    holds every live session of the agent: the server then ends those it has and the agent does not.
    ``exiting`` says the process is going away: its remaining sessions end as ``process_exit``.
    """

    agent: AgentInfo
    full: Flag = False
    exiting: Flag = False
    sessions: list[TrackedSession] = Field(default_factory=list, max_length=MAX_SYNC_SESSIONS)
    ended: list[SessionEnd] = Field(default_factory=list, max_length=MAX_SYNC_SESSIONS)
    stalls: list[Stall] = Field(default_factory=list, max_length=MAX_SYNC_STALLS)
    config: ConfigFollow | None = Field(default=None, description="The shared-config apps the process follows.")


class Command(BaseModel):
    """An order for an agent. ``id`` 0 marks one derived from stored intent rather than the queue."""

    id: int
    kind: str
    session_id: str
    reason: str | None = None
    actor: str | None = None


class SyncResponse(ConfigChanges):
    resync: bool = Field(description="The server did not know this agent (new database): send a full sync now.")
    commands: list[Command] = Field(description="Kills pending for this agent's sessions (the fallback path).")
    sync_interval_s: float
    server_time: datetime
    stalls_refused: int = Field(default=0, description="Stalls of this sync not stored (over the agent's rate).")
    stalls_error: str | None = Field(default=None, description="Why stalls were refused; the sync itself stood.")
    notices: list[Notice] = Field(default_factory=list, description="Every active notice for this agent's pages.")
    notices_rev: str = Field(default="", description="Revision of `notices`; pass it to the command long-poll.")
    drain: DrainInfo | None = Field(
        default=None, description="This process is draining (unready, sessions end at the deadline); else null."
    )
    policies: Policies | None = Field(default=None, description="The session limits and exemptions in force.")
    others: LiveCounts | None = Field(
        default=None,
        description="Live sessions of the other processes against each limit (absent when no limit is set).",
    )


class CommandBatch(ConfigChanges):
    """``GET /agents/{agent_id}/commands``: commands after the agent's cursor; pass ``cursor`` back next time.

    With ``config_after`` (and ``config_epoch``) it also answers, at once, with the changes of the shared-config
    apps the agent follows (``config``, ``config_cursor``).
    """

    commands: list[Command]
    cursor: int
    notices: list[Notice] | None = Field(
        default=None, description="The active notices, when their revision differs from the `notices` passed."
    )
    notices_rev: str | None = None


class AgentOut(BaseModel):
    agent_id: str
    host: str
    pid: int
    command: str
    versions: dict[str, str]
    cpu_percent: float | None
    rss_bytes: int | None
    started_at: datetime
    last_seen: datetime
    exited_at: datetime | None
    session_count: int
    apps: list[str]
    is_stale: bool
    leftovers: list[Leftover] = Field(default_factory=list, description="What its ended sessions left running.")
    loop: LoopHealthOut | None = None
    drain: DrainInfo | None = Field(default=None, description="Draining until its deadline; null when not.")


class AgentList(BaseModel):
    agents: list[AgentOut]
