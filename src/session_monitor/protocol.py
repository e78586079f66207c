"""Wire types of the REST API: the only place request and response shapes are defined.

The prototype's endpoints keep their exact field names; fields we add are
optional in requests and additive in responses, so the prototype's own client
and dashboard keep working.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from session_monitor.text import printable

API_VERSION = "1"

MAX_APP_NAME = 200
MAX_USER_ID = 200
MAX_HOST = 255
MAX_TASK = 500
MAX_STATUS = 32
MAX_SESSION_ID = 128
MAX_ACTOR = 100
MAX_REASON = 500

SESSION_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
STATUS_PATTERN = r"^[a-z][a-z0-9_-]*$"

SessionState = Literal["idle", "running", "disconnected", "stale"]
"""What a live session is doing, as shown to operators."""

EndReason = Literal["closed", "browser_lost", "killed", "expired", "process_exit", "process_lost"]
"""Why a session ended. ``process_lost``: its process died without a word (SIGKILL, the OOM killer), as the server
saw from the agent's dropped long-poll and missed syncs."""

LIVE_STATES: tuple[str, ...] = ("idle", "running", "disconnected", "stale")
END_REASONS: tuple[str, ...] = ("closed", "browser_lost", "killed", "expired", "process_exit", "process_lost")


PRINTABLE_FORMAT = "printable"
"""OpenAPI ``format`` of every free-text field: no control (Cc), surrogate (Cs) or unassigned (Cn) code point.

JSON Schema cannot say "assigned in Unicode" with a pattern of reasonable size, so the rule has a name."""

_PRINTABLE_SCHEMA = Field(json_schema_extra={"format": PRINTABLE_FORMAT})
"""Declares :func:`~session_monitor.text.printable` in the schema; put it beside every ``AfterValidator(printable)``."""


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


Text = Annotated[str, AfterValidator(printable), _PRINTABLE_SCHEMA]
AppName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_APP_NAME, json_schema_extra={"format": PRINTABLE_FORMAT, "pattern": r"\S"}),
    AfterValidator(printable),
    AfterValidator(_not_blank),
]
UserId = Annotated[str, Field(max_length=MAX_USER_ID), AfterValidator(printable), _PRINTABLE_SCHEMA]
HostName = Annotated[str, Field(min_length=1, max_length=MAX_HOST), AfterValidator(printable), _PRINTABLE_SCHEMA]
TaskName = Annotated[str, Field(max_length=MAX_TASK), AfterValidator(printable), _PRINTABLE_SCHEMA]
Status = Annotated[str, Field(min_length=1, max_length=MAX_STATUS, pattern=STATUS_PATTERN)]
INT32_MAX = 2**31 - 1
"""Largest value of an ``Integer`` column (PostgreSQL ``int4``): pids and command ids."""

Strict = Field(strict=True)
"""A value of another JSON type than the schema's is refused, not coerced (``"pid": false`` was stored as 0)."""


def _json_integer(value: object) -> object:
    """JSON Schema's ``integer``: a number without a fractional part (``12.0`` too); not a boolean or a string."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a JSON integer")
    return value


JSONInteger = BeforeValidator(_json_integer)
"""Put it after the bounds (``Annotated[int, Field(ge=...), JSONInteger]``): before them, they leave the schema."""

Pid = Annotated[int, Field(ge=0, le=INT32_MAX), JSONInteger]
Flag = Annotated[bool, Strict]
Reason = Annotated[str, Field(max_length=MAX_REASON), AfterValidator(printable), _PRINTABLE_SCHEMA]

Visibility = Literal["visible", "hidden"]
"""``document.visibilityState`` as the page last reported it (a frozen page reports nothing)."""


class _Request(BaseModel):
    # Unknown fields are ignored so newer clients can talk to older servers.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


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
    """Optional body of the kill endpoints: why, shown to the user and kept in the audit log."""

    reason: Reason | None = None


class StatusResponse(BaseModel):
    status: str


class HeartbeatResponse(BaseModel):
    kill_requested: bool


class KillAllResponse(BaseModel):
    killed_count: int


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


# -- agent protocol: one agent per Panel process --------------------------------------------------------------------

AGENT_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
MAX_SYNC_SESSIONS = 20_000
"""Most sessions (or ends) one sync request may carry."""

KILL = "kill"
"""Command kind: end the session now (``on_kill`` callbacks, websockets closed, session destroyed)."""

AgentId = Annotated[str, Field(pattern=AGENT_ID_PATTERN)]
SessionIdField = Annotated[str, Field(min_length=1, max_length=MAX_SESSION_ID, pattern=SESSION_ID_PATTERN)]
ShortText = Annotated[str, Field(max_length=64), AfterValidator(printable), _PRINTABLE_SCHEMA]
CommandLine = Annotated[str, Field(max_length=1000), AfterValidator(printable), _PRINTABLE_SCHEMA]


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+05:00: it raised a 500 when stored
        raise ValueError("out of range once converted to UTC") from None


def _text_time(value: object) -> object:
    """An ISO 8601 string (or a datetime): pydantic would also read a number, or a string of digits, as Unix time."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or _is_number(value):
        raise ValueError("must be an ISO 8601 date-time string with its offset")
    return value


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


UTCTime = Annotated[AwareDatetime, BeforeValidator(_text_time), AfterValidator(_utc)]
"""A timestamp from an agent: with its offset (a naive one raised a 500), converted to UTC."""


# -- what each session costs, and what ended sessions left running ---------------------------------------------------

MAX_CALLBACK_NAME = 200
"""Longest callback, function or thread name an agent may send."""
MAX_LEFTOVERS = 100
"""Most leftovers one process may report."""

CallbackName = Annotated[str, Field(max_length=MAX_CALLBACK_NAME), AfterValidator(printable), _PRINTABLE_SCHEMA]
Seconds = Annotated[float, Field(ge=0, le=1e12)]
Count = Annotated[int, Field(ge=0, le=2**53 - 1), JSONInteger]
"""Counts and byte sizes: at most 2**53 - 1, the largest integer every JSON reader (a double) holds exactly."""

LeftoverKind = Literal["thread", "periodic_callback", "pool_job"]
"""What an ended session left running: a thread it started, a periodic callback on its document, a pool job."""


class SlowCallback(_Request):
    """The slowest callback a session ran: its qualified name (``module.Class.method``) and how long it took."""

    qualname: CallbackName
    duration_s: Seconds


class SessionCost(_Request):
    """What a live session costs its process, as its agent measured it (see the README's "What each session costs").

    Wall time is time its own work ran: callbacks, event handling, periodic callbacks and document patches on
    the IOLoop (``loop_seconds_*``), and jobs it submitted to Panel's thread pool (``pool_thread_seconds``).
    """

    loop_seconds_total: Seconds = 0.0
    loop_seconds_1m: Seconds = Field(default=0.0, description="Loop time of the last 60 seconds.")
    pool_thread_seconds: Seconds = Field(default=0.0, description="Time of its jobs on thread-pool threads.")
    callbacks_total: Count = 0
    slowest_callback: SlowCallback | None = None
    periodic_callbacks: Count = 0
    doc_models: Count | None = Field(default=None, description="Bokeh models in its document (null: not sized yet).")
    doc_data_bytes: Count | None = Field(
        default=None, description="Bytes of ColumnDataSource data, numpy arrays and DataFrames its document holds."
    )
    threads_alive: Count = Field(default=0, description="Live threads its code started (they carry its key).")
    pool_jobs: Count = Field(default=0, description="Its jobs running now in thread pools and the worker pool.")
    pool_cpu_seconds: Seconds | None = Field(default=None, description="CPU seconds of its worker-pool jobs.")
    measured_at: UTCTime


class Leftover(_Request):
    """Work still running for a session that ended (reported on its process)."""

    session_id: SessionIdField
    ended_at: UTCTime
    kind: LeftoverKind
    name: CallbackName = Field(description="The thread's name, or what kind of callback or job it is.")
    function: CallbackName = Field(description="The qualified name of the function it runs.")


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


# -- loop health and stalls of a Panel process's IOLoop -----------------------------------------------------------

LOOP_LAG_BUCKETS_S: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds of the loop-lag histogram buckets (seconds); ``LoopHealth.lag_buckets`` has one more, for +Inf."""
LAG_BUCKETS = len(LOOP_LAG_BUCKETS_S) + 1
MAX_STALL_FRAMES = 30
"""Most frames of one stall's stack."""
MAX_FRAME_FILE = 500
MAX_FRAME_FUNCTION = 200
MAX_FRAME_CODE = 300
MAX_SYNC_STALLS = 100
"""Most stalls one sync may carry (beyond: 422; an agent's own queue holds fewer)."""

FrameFile = Annotated[str, Field(max_length=MAX_FRAME_FILE), AfterValidator(printable), _PRINTABLE_SCHEMA]
FunctionName = Annotated[str, Field(max_length=MAX_FRAME_FUNCTION), AfterValidator(printable), _PRINTABLE_SCHEMA]
CodeLine = Annotated[str, Field(max_length=MAX_FRAME_CODE), AfterValidator(printable), _PRINTABLE_SCHEMA]
LagMs = Annotated[float, Field(ge=0, le=1e9), Strict]
LoopCount = Annotated[int, Field(ge=0, le=10_000_000), JSONInteger]


class LoopHealth(_Request):
    """How the process's IOLoop did over one sync interval, measured by a probe scheduled every 100 ms."""

    interval_s: float = Field(ge=0, le=86_400, strict=True, description="Seconds of wall time this measurement covers.")
    probes: LoopCount = Field(description="Probes that ran in the interval.")
    lag_p50_ms: LagMs | None = None
    lag_p99_ms: LagMs | None = None
    lag_max_ms: LagMs | None = Field(default=None, description="Latest probe, including one still waiting now.")
    lag_sum_ms: LagMs = 0.0
    lag_buckets: Annotated[list[LoopCount], Field(min_length=LAG_BUCKETS, max_length=LAG_BUCKETS)] | None = Field(
        default=None,
        description="Probe lags per bucket of LOOP_LAG_BUCKETS_S (not cumulative), the last for beyond.",
    )
    busy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        strict=True,
        description="Share of wall time the loop ran callbacks (not waiting in select).",
    )
    pool_size: Annotated[int, Field(ge=0, le=100_000), JSONInteger] | None = Field(
        default=None, description="Panel's --num-threads pool size."
    )
    pool_queue: LoopCount | None = Field(default=None, description="Jobs waiting in Panel's pool.")
    pool_busy: Annotated[int, Field(ge=0, le=100_000), JSONInteger] | None = Field(
        default=None, description="Threads of Panel's pool running a job."
    )
    stalls_dropped: Count = Field(default=0, description="Stalls the agent dropped (its queue full).")


class StallFrame(_Request):
    """One frame of a stalled loop's stack."""

    file: FrameFile
    line: LoopCount
    function: FunctionName
    code: CodeLine | None = None
    app: Flag = Field(default=False, description="Not in the standard library or site-packages: the app's code.")


class Stall(_Request):
    """The IOLoop did not run its probe for ``SESSION_MONITOR_STALL_S``: what it was running, and for how long.

    Sent at the next sync once seen (``final`` false, duration so far), and again once the loop is back.
    """

    seq: Count = Field(description="The stall's number in its agent (updates carry the same one).")
    started_at: UTCTime
    duration_s: float = Field(ge=0, le=1e7, strict=True)
    final: Flag = Field(description="The loop is back: the duration is final.")
    session_id: SessionIdField | None = Field(default=None, description="The session whose work was running.")
    function: FunctionName | None = Field(default=None, description="Qualified name of the callback running.")
    stack: list[StallFrame] = Field(
        default_factory=list, max_length=MAX_STALL_FRAMES, description="The loop thread's stack, app frames first."
    )


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


class Command(BaseModel):
    """An order for an agent. ``id`` 0 marks one derived from stored intent rather than the queue."""

    id: int
    kind: str
    session_id: str
    reason: str | None = None
    actor: str | None = None


class SyncResponse(BaseModel):
    resync: bool = Field(description="The server did not know this agent (new database): send a full sync now.")
    commands: list[Command] = Field(description="Kills pending for this agent's sessions (the fallback path).")
    sync_interval_s: float
    server_time: datetime
    stalls_refused: int = Field(default=0, description="Stalls of this sync not stored (over the agent's rate).")
    stalls_error: str | None = Field(default=None, description="Why stalls were refused; the sync itself stood.")


class CommandBatch(BaseModel):
    """``GET /agents/{agent_id}/commands``: commands after the agent's cursor; pass ``cursor`` back next time."""

    commands: list[Command]
    cursor: int


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


class LoopHealthOut(BaseModel):
    """An agent's latest loop health, as ``GET /agents`` shows it."""

    measured_at: datetime
    interval_s: float
    probes: int
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    lag_max_ms: float | None
    busy: float | None
    pool_size: int | None
    pool_queue: int | None
    pool_busy: int | None
    stalls_dropped: int = Field(description="Stalls dropped: by the agent (queue full) and by the server (caps).")


class AgentList(BaseModel):
    agents: list[AgentOut]


class StallOut(BaseModel):
    """A stall as ``GET /stalls`` shows it."""

    id: int
    agent_id: str
    seq: int
    host: str
    pid: int
    app_name: str | None
    session_id: str | None
    function: str | None
    started_at: datetime
    duration_s: float
    final: bool
    stack: list[dict[str, Any]]
    received_at: datetime


class StallList(BaseModel):
    stalls: list[StallOut]
    total: int
    dropped: int = Field(description="Stalls dropped so far by the agents and the server's caps (oldest first).")


SessionOut.model_rebuild()  # its ``cost`` refers to a model defined further down
