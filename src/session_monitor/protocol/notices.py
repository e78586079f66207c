"""Notices to the users of live pages: announcements, and kills with notice (a countdown, then the kill).

Operators post them over REST; agents get the active set that concerns them in every sync answer and, at once,
in the answer of their command long-poll (``notices`` with a revision: unchanged sets are not sent again).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from session_monitor.protocol.common import (
    PRINTABLE_FORMAT,
    AppName,
    HostName,
    SessionIdField,
    UTCTime,
    _not_blank,
    _Request,
)
from session_monitor.text import printable

MAX_MESSAGE = 500
"""Longest announcement, in characters."""
MAX_TARGETS = 100
"""Most apps, hosts or session ids one announcement may target."""
MAX_NOTICE_AHEAD_S = 7 * 24 * 3600
"""Farthest an announcement's ``until`` or a kill's deadline may lie ahead: 7 days."""
MAX_ACTIVE_ANNOUNCEMENTS = 100
"""Most announcements active at once (another is refused with 409)."""
MAX_PENDING_KILLS = 10_000
"""Most kills with notice pending at once (another is refused with 409)."""

NoticeLevel = Literal["info", "warning", "error"]
NoticeKind = Literal["announcement", "kill"]
ANNOUNCEMENT = "announcement"
KILL_NOTICE = "kill"

Message = Annotated[
    str,
    Field(min_length=1, max_length=MAX_MESSAGE, json_schema_extra={"format": PRINTABLE_FORMAT, "pattern": r"\S"}),
    AfterValidator(printable),
    AfterValidator(_not_blank),
]


class AnnouncementCreate(_Request):
    """``POST /announcements``: a message for the users of live pages; no target means every page."""

    message: Message = Field(description="Plain text (never HTML), 1-500 characters.")
    level: NoticeLevel = "info"
    apps: list[AppName] | None = Field(
        default=None, min_length=1, max_length=MAX_TARGETS, description="Only these apps."
    )
    hosts: list[HostName] | None = Field(
        default=None, min_length=1, max_length=MAX_TARGETS, description="Only sessions on these hosts."
    )
    session_ids: list[SessionIdField] | None = Field(
        default=None, min_length=1, max_length=MAX_TARGETS, description="Only these sessions."
    )
    until: UTCTime | None = Field(default=None, description="Taken away at this time (in the future, ≤ 7 days).")


class AnnouncementOut(BaseModel):
    id: int
    message: str
    level: NoticeLevel
    apps: list[str] | None
    hosts: list[str] | None
    session_ids: list[str] | None
    until: datetime | None
    created_at: datetime
    created_by: str
    removed_at: datetime | None
    removed_by: str | None
    active: bool = Field(description="Shown now: neither removed nor past `until`.")


class AnnouncementList(BaseModel):
    announcements: list[AnnouncementOut]


class PendingKillOut(BaseModel):
    """A kill with notice: of one session (``session_id``) or of every session of an app (``app_name``)."""

    id: int
    session_id: str | None
    app_name: str | None
    deadline: datetime
    reason: str | None
    created_at: datetime
    created_by: str
    cancelled_at: datetime | None
    cancelled_by: str | None
    fired_at: datetime | None
    state: Literal["pending", "cancelled", "done"]
    seconds_left: float = Field(description="Until the deadline (0 once past).")


class PendingKillList(BaseModel):
    pending_kills: list[PendingKillOut]


class Notice(BaseModel):
    """One active notice as an agent gets it; the agent shows it in its matching live pages.

    ``apps``/``session_ids`` null mean any (the server already dropped those for other hosts). A ``kill``
    notice is a countdown to ``deadline``; the server carries the kill out then, as a normal kill.
    """

    id: str = Field(description="`announcement:<id>` or `kill:<id>`: the banner's key in the page.")
    kind: NoticeKind
    message: str
    level: NoticeLevel
    apps: list[str] | None = None
    session_ids: list[str] | None = None
    deadline: datetime | None = None
    until: datetime | None = None
