"""Every error this package raises to its callers.

Hierarchy (callers branch on these)::

    SessionMonitorError
    ├── ConfigError (also ValueError)   bad configuration or argument
    ├── RequestFailed                   a call to the server's REST API failed (``status_code``: its answer's)
    │   ├── ServerUnavailable           the monitor server cannot be reached, timed out or answered with a 5xx
    │   └── AuthError                   the server refused our credentials (401/403)
    ├── SessionNotFound                 no live session with that id
    │   └── SessionEnded                the session existed but has ended
    ├── ProcessNotFound (also LookupError)  no live Panel process matches a drain target
    ├── JobCancelled                    a pool job was cancelled (its session ended, Cancel, pool shut down)
    ├── JobFailed                       a pool job's worker died, or its result could not be pickled
    ├── ConfigConflict                  a shared-config write expected another version (``current_value``/``_version``)
    └── ConfigNotFound                  no such shared-config key, or no such version of it (a revert)

Outside the tree, on purpose: ``session_monitor.pool.JobInterrupted`` is raised *into* a pool job's own code
to stop it (a ``BaseException``, like ``KeyboardInterrupt``), never to a caller; a misuse (a cancel token used
outside a job, a closed store) raises ``RuntimeError``. The tracker never raises for the monitor's sake: it
works offline. The server answers HTTP errors, and the CLI exits with a message.
"""

from __future__ import annotations


class SessionMonitorError(Exception):
    """Base class of every error raised by panel-session-monitor."""


class ConfigError(SessionMonitorError, ValueError):
    """A setting or argument is invalid; the message names it and says why."""


class RequestFailed(SessionMonitorError):
    """A call to the monitor server's REST API failed; the message says why, with the server's own ``detail``.

    ``status_code`` is the HTTP status of the server's answer, ``None`` when there was none.
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class ServerUnavailable(RequestFailed):
    """The monitor server could not be reached, timed out or answered with a 5xx: trying again later may work."""


class AuthError(RequestFailed):
    """The monitor server refused the request's credentials (401) or its rights (403): check the token."""


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


class ProcessNotFound(SessionMonitorError, LookupError):
    """No live Panel process matches the target (``host:pid``, a host, or an app's processes)."""

    def __init__(self, target: str) -> None:
        self.target = target
        super().__init__(f"no live Panel process for {target}")


class ConfigConflict(SessionMonitorError):
    """A shared-config write expected another version than the stored one (compare-and-set lost).

    ``current_version`` and ``current_value`` are what is stored now (version 0 and ``None``: the key does not
    exist); retry from them, or use ``update()``, which does.
    """

    def __init__(
        self, app: str, key: str, expected_version: int | None, current_version: int, current_value: object
    ) -> None:
        self.app = app
        self.key = key
        self.expected_version = expected_version
        self.current_version = current_version
        self.current_value = current_value
        super().__init__(
            f"config {app!r}/{key!r}: expected version {expected_version}, but version {current_version} is stored"
        )


class ConfigNotFound(SessionMonitorError):
    """No shared-config key by this name (``version`` None), or no such version of it in its history."""

    def __init__(self, app: str, key: str, version: int | None = None, current_version: int = 0) -> None:
        self.app = app
        self.key = key
        self.version = version
        self.current_version = current_version
        what = f"version {version} of config {app!r}/{key!r}" if version is not None else f"config {app!r}/{key!r}"
        super().__init__(f"{what} not found")
