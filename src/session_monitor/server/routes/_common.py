"""Shared parameter types and the fast JSON responses of the routers."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import AfterValidator
from starlette.convertors import Convertor, register_url_convertor
from starlette.types import Receive, Scope, Send

from session_monitor.errors import SessionNotFound
from session_monitor.protocol import (
    MAX_APP_NAME,
    MAX_HOST,
    MAX_SESSION_ID,
    MAX_USER_ID,
    PRINTABLE_FORMAT,
    SESSION_ID_PATTERN,
)
from session_monitor.text import printable

_SESSION_ID_RE = re.compile(SESSION_ID_PATTERN)


class _AnyPath(Convertor[str]):
    """``{name:anypath}``: like Starlette's ``path``, line breaks included.

    With ``path`` (``.*``) a name holding a line break matched no route: a bare 404 "Not Found" instead of
    the 422 that says which character is refused."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", _AnyPath())


async def single_valued_query(request: Request) -> None:
    """Every query parameter is one value: ``?app=a&app=b`` is refused (FastAPI would silently keep ``b``)."""
    repeated = sorted({key for key in request.query_params if len(request.query_params.getlist(key)) > 1})
    if repeated:
        raise RequestValidationError(
            [
                {"loc": ("query", key), "msg": "given more than once; give it once", "type": "repeated"}
                for key in repeated
            ]
        )


SingleValuedQuery = Depends(single_valued_query)
"""Router dependency of the routers with query parameters."""


class JSONBytes(Response):
    """JSON rendered by orjson: listing 10,000 sessions is dominated by serialisation otherwise."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class JSONParts(Response):
    """A JSON document given as its consecutive parts, sent one after another with one ``Content-Length``.

    A listing of 10,000 sessions is 6.5 MB: joining its head, rows and tail into one ``bytes`` on the event
    loop cost a copy of it (about 6 ms, most of it page faults of the new buffer) before the first byte left.
    """

    media_type = "application/json"

    def __init__(self, parts: Sequence[bytes], status_code: int = 200) -> None:
        self.parts = tuple(parts)
        super().__init__(b"", status_code=status_code)
        self.headers["content-length"] = str(sum(len(part) for part in self.parts))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if scope.get("method") != "HEAD":
            for part in self.parts:
                await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        if self.background is not None:
            await self.background()


def checked_session_id(session_id: str) -> str:
    """An id that cannot exist (too long, odd characters) is simply not found; it never reaches SQL."""
    if len(session_id) > MAX_SESSION_ID or not _SESSION_ID_RE.match(session_id):
        raise SessionNotFound(session_id[:MAX_SESSION_ID])
    return session_id


SessionId = Annotated[str, Path(description="Session id as returned by POST /sessions.")]

AppFilter = Annotated[
    str | None,
    Query(max_length=MAX_APP_NAME, description="Only this app.", json_schema_extra={"format": PRINTABLE_FORMAT}),
    AfterValidator(lambda v: v if v is None else printable(v)),
]
UserFilter = Annotated[
    str | None,
    Query(max_length=MAX_USER_ID, description="Only this user.", json_schema_extra={"format": PRINTABLE_FORMAT}),
    AfterValidator(lambda v: v if v is None else printable(v)),
]
HostFilter = Annotated[
    str | None,
    Query(
        max_length=MAX_HOST, description="Only sessions on this host.", json_schema_extra={"format": PRINTABLE_FORMAT}
    ),
    AfterValidator(lambda v: v if v is None else printable(v)),
]
SearchFilter = Annotated[
    str | None,
    Query(
        max_length=200,
        description="Substring of id, app, user, task or host.",
        json_schema_extra={"format": PRINTABLE_FORMAT},
    ),
    AfterValidator(lambda v: v if v is None else printable(v)),
]
Offset = Annotated[int, Query(ge=0, le=10**9, description="Rows to skip.")]
