"""Errors as HTTP answers: every error body is ``{"detail": "<one line>"}`` (422 adds ``errors``).

Database errors are classified by what they mean, not by where they come from:

- the database does not answer (connection refused or lost, locked, shutting down): **503**
  ``database unavailable, try again`` with ``Retry-After``: retrying is right;
- its disk is full (SQLite ``SQLITE_FULL``, PostgreSQL SQLSTATE 53100): **507** ``database disk is
  full``; reads still work, and ``/healthz`` reports ``database: disk_full`` until a write succeeds;
- a value it cannot take (SQLSTATE class 22, an integer beyond the driver's range): **422**. Inputs are
  bounded so this should not happen; when it does it is logged as the bug it is, never told to retry;
- anything else (a constraint, a syntax error): **500**, logged with its traceback.
"""

from __future__ import annotations

import enum
import errno
import logging
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Route

from session_monitor.errors import ConfigConflict, ConfigNotFound, ProcessNotFound, SessionNotFound
from session_monitor.protocol import ErrorBody, ValidationErrorBody
from session_monitor.store.repository import utcnow

logger = logging.getLogger(__name__)

UNAVAILABLE = "database unavailable, try again"
DISK_FULL = "database disk is full: writes are refused until space is freed on the database's disk"
BAD_VALUE = "a value is out of the range the database can store"

_SQLITE_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CANTOPEN",
    "SQLITE_IOERR",
    "SQLITE_PROTOCOL",
    "SQLITE_NOMEM",
)
"""Locked past the busy timeout, the file cannot be opened or read: retrying later may succeed."""
_PG_UNAVAILABLE_CLASSES = ("08", "40", "53", "57", "58")
"""Connection exception, transaction rollback (deadlock, serialization), insufficient resources,
operator intervention (shutdown, cancel), system error: retrying later may succeed."""


class DatabaseFault(enum.Enum):
    UNAVAILABLE = "unavailable"
    DISK_FULL = "disk_full"
    BAD_VALUE = "bad_value"
    OTHER = "other"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        nxt = getattr(current, "orig", None) if isinstance(current, sqlalchemy.exc.StatementError) else None
        current = nxt if isinstance(nxt, BaseException) else (current.__cause__ or current.__context__)
    return seen


def _sqlite_fault(err: sqlite3.Error) -> DatabaseFault:
    name = getattr(err, "sqlite_errorname", "") or ""
    if name == "SQLITE_FULL":
        return DatabaseFault.DISK_FULL
    if name.startswith(("SQLITE_TOOBIG", "SQLITE_MISMATCH", "SQLITE_RANGE")):
        return DatabaseFault.BAD_VALUE
    if name.startswith(_SQLITE_UNAVAILABLE):
        return DatabaseFault.UNAVAILABLE
    return DatabaseFault.OTHER


def _sqlstate_fault(sqlstate: str) -> DatabaseFault:
    if sqlstate == "53100":
        return DatabaseFault.DISK_FULL
    if sqlstate.startswith("22"):
        return DatabaseFault.BAD_VALUE
    if sqlstate.startswith(_PG_UNAVAILABLE_CLASSES):
        return DatabaseFault.UNAVAILABLE
    return DatabaseFault.OTHER


def classify(exc: BaseException) -> DatabaseFault:
    """What a database error means for the client."""
    for err in _chain(exc):
        if isinstance(err, sqlite3.Error):
            return _sqlite_fault(err)
        sqlstate = getattr(err, "sqlstate", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            return _sqlstate_fault(sqlstate)
        if isinstance(err, OverflowError):  # sqlite3: "Python int too large to convert to SQLite INTEGER"
            return DatabaseFault.BAD_VALUE
        if isinstance(err, OSError):
            return DatabaseFault.DISK_FULL if err.errno == errno.ENOSPC else DatabaseFault.UNAVAILABLE
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return DatabaseFault.UNAVAILABLE
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError | TimeoutError):
        return DatabaseFault.UNAVAILABLE
    return DatabaseFault.OTHER


@dataclass
class WriteHealth:
    """Whether the database takes writes: set by a disk-full error, cleared by the next committed write."""

    disk_full_since: datetime | None = None

    def disk_full(self) -> None:
        if self.disk_full_since is None:
            self.disk_full_since = utcnow()
            logger.error("database disk is full: writes are refused until space is freed")

    def wrote(self, _batch_size: int = 0) -> None:
        if self.disk_full_since is not None:
            logger.warning("database takes writes again (disk full since %s)", self.disk_full_since.isoformat())
            self.disk_full_since = None


_ERROR_DESCRIPTIONS = {
    400: "A malformed header: `Content-Length`, or `X-Session-Monitor-Actor` with control characters.",
    401: "A token is required (tokens configured) or the one sent is not valid.",
    403: "A cross-site browser request (state-changing methods), or the client token where the admin token is needed.",
    404: "No session has this id (an id that cannot exist is simply not found).",
    409: "Too many active announcements or pending kills: remove or cancel one first.",
    413: "The request body exceeds the limit (`SESSION_MONITOR_MAX_BODY_BYTES`; larger for agent syncs), or a "
    "shared-config value exceeds 256 KiB.",
    421: "The `Host` header is not served: the DNS-rebinding guard, active unless both tokens are set.",
    503: f"`{UNAVAILABLE}`: the database does not answer (see `Retry-After`).",
    507: "`database disk is full`: the database refuses writes until space is freed; reads still work and "
    "`/healthz` reports `database: disk_full`.",
}

COMMON_ERRORS = (400, 413, 421, 503)
"""What any route may answer: checked by the middleware before the route runs, or the database."""


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these statuses; 422 is the validation body, the others :class:`ErrorBody`."""
    declared: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        if status == 422:
            declared[422] = {
                "model": ValidationErrorBody,
                "description": "Invalid input: `detail` names the field, the problem and the allowed range.",
            }
        else:
            declared[status] = {"model": ErrorBody, "description": _ERROR_DESCRIPTIONS[status]}
    return declared


def validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def database_error_response(exc: BaseException, health: WriteHealth) -> JSONResponse:
    fault = classify(exc)
    shown = getattr(exc, "orig", None) or exc
    if fault is DatabaseFault.DISK_FULL:
        health.disk_full()
        logger.error("database disk is full: %s", shown)
        return JSONResponse({"detail": DISK_FULL}, status_code=507, headers={"Retry-After": "60"})
    if fault is DatabaseFault.UNAVAILABLE:
        logger.error("database unavailable: %s", shown)
        return JSONResponse({"detail": UNAVAILABLE}, status_code=503, headers={"Retry-After": "1"})
    if fault is DatabaseFault.BAD_VALUE:
        # Inputs are bounded to what the columns take: reaching here means a bound is missing.
        logger.error("database refused a value (an input bound is missing): %s", shown)
        return JSONResponse({"detail": BAD_VALUE}, status_code=422)
    logger.error("database error", exc_info=exc)
    return JSONResponse({"detail": "internal database error"}, status_code=500)


def allowed_methods(request: Request) -> list[str]:
    """Every method of the routes on this path: Starlette's 405 names only the first route's, and a path's
    methods may live in two routers (``GET`` and ``DELETE /sessions/{id}``)."""
    methods: set[str] = set()
    pending: list[BaseRoute] = list(request.app.router.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)  # FastAPI >= 0.160 keeps included routers whole
        if isinstance(included, APIRouter):
            pending.extend(included.routes)
        elif (
            isinstance(route, Route | APIRoute) and route.methods and route.matches(request.scope)[0] is not Match.NONE
        ):
            methods |= route.methods
    return sorted(methods)


def install_error_handlers(app: FastAPI, health: WriteHealth) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may be large, and it is someone else's text.
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return JSONResponse({"detail": validation_message(errors), "errors": errors}, status_code=422)

    @app.exception_handler(SessionNotFound)
    async def _not_found(_: Request, exc: SessionNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ProcessNotFound)
    async def _no_process(_: Request, exc: ProcessNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ConfigConflict)
    async def _config_conflict(_: Request, exc: ConfigConflict) -> JSONResponse:
        body = {"detail": str(exc), "current_version": exc.current_version, "current_value": exc.current_value}
        return JSONResponse(body, status_code=412, headers={"ETag": f'"{exc.current_version}"'})

    @app.exception_handler(ConfigNotFound)
    async def _config_not_found(_: Request, exc: ConfigNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "current_version": exc.current_version}, status_code=404)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(sqlalchemy.exc.StatementError)  # DBAPIError, or a value no bind parameter takes
    async def _database(_: Request, exc: sqlalchemy.exc.StatementError) -> JSONResponse:
        return database_error_response(exc, health)

    @app.exception_handler(OSError)
    async def _os(_: Request, exc: OSError) -> JSONResponse:
        return database_error_response(exc, health)

    @app.exception_handler(OverflowError)
    async def _overflow(_: Request, exc: OverflowError) -> JSONResponse:
        return database_error_response(exc, health)


# What each kind of route may answer besides COMMON_ERRORS (declared once, on the app).
READ = error_responses(401, 403, 422)
READ_SESSION = error_responses(401, 403, 404, 422)
READ_CLIENT = error_responses(401, 422)
READ_ADMIN = error_responses(401, 403, 422)
WRITE_CLIENT = error_responses(401, 403, 422, 507)
WRITE_SESSION = error_responses(401, 403, 404, 422, 507)
