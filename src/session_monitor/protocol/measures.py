"""What the agents measure: per-session cost, leftovers of ended sessions, loop health and stalls."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from session_monitor.protocol.common import (
    _PRINTABLE_SCHEMA,
    Flag,
    JSONInteger,
    SessionIdField,
    Strict,
    UTCTime,
    _Request,
)
from session_monitor.text import printable

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
