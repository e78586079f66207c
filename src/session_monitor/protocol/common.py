"""Shared pieces of the wire types: bounds, text and time types, the strict request base."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

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

EndReason = Literal["closed", "browser_lost", "killed", "expired", "process_exit", "process_lost", "drained", "refused"]
"""Why a session ended. ``process_lost``: its process died without a word (SIGKILL, the OOM killer), as the server
saw from the agent's dropped long-poll and missed syncs. ``drained``: its process was drained and the drain's
deadline came. ``refused``: it would have gone over a session limit (``PUT /policies``); the user got a page
saying why instead of the app."""

LIVE_STATES: tuple[str, ...] = ("idle", "running", "disconnected", "stale")
END_REASONS: tuple[str, ...] = (
    "closed", "browser_lost", "killed", "expired", "process_exit", "process_lost", "drained", "refused",
)  # fmt: skip


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
