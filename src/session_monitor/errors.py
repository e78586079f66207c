"""Every error this package raises.

Hierarchy (callers branch on these; nothing else is raised on purpose)::

    SessionMonitorError
    ├── ConfigError (also ValueError)   bad configuration or argument
    ├── ServerUnavailable               the monitor server cannot be reached or is failing
    ├── AuthError                       the server refused our token (401/403)
    ├── SessionNotFound                 no live session with that id
    │   └── SessionEnded                the session existed but has ended
    ├── JobCancelled                    a pool job was cancelled (its session ended, Cancel, pool shut down)
    └── JobFailed                       a pool job's worker died, or its result could not be pickled
"""

from __future__ import annotations


class SessionMonitorError(Exception):
    """Base class of every error raised by panel-session-monitor."""


class ConfigError(SessionMonitorError, ValueError):
    """A setting or argument is invalid; the message names it and says why."""


class ServerUnavailable(SessionMonitorError):
    """The monitor server could not be reached, timed out or answered with a 5xx."""


class AuthError(SessionMonitorError):
    """The monitor server refused the request's credentials."""


class SessionNotFound(SessionMonitorError):
    """No live session has this id."""

    def __init__(self, session_id: str, message: str | None = None) -> None:
        self.session_id = session_id
        super().__init__(message or f"session {session_id!r} not found")


class SessionEnded(SessionNotFound):
    """The session is known but has already ended, so it cannot be changed."""

    def __init__(self, session_id: str, end_reason: str | None) -> None:
        self.end_reason = end_reason
        super().__init__(session_id, f"session {session_id!r} has already ended ({end_reason or 'unknown reason'})")


class JobCancelled(SessionMonitorError):
    """Raised by awaiting (or ``result()`` of) a job that was cancelled: its session was killed or ended,
    the job or its session's jobs were cancelled, or the pool was shut down.

    Not an ``asyncio.CancelledError``: asyncio treats that one as *the awaiting task* being cancelled
    (``TaskGroup``, ``gather``, ``timeout`` and Panel's callback runner all act on it), while here only the
    job was. Catch it like any error.
    """

    def __init__(self, job_id: int | None, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"job {job_id} was cancelled: {reason}" if job_id is not None else reason)


class JobFailed(SessionMonitorError):
    """The job could not run or report: its worker died, or its exception or result could not be pickled."""
