"""Session rows rendered as JSON by the database itself: listings of 10,000 or 100,000 sessions.

Each row comes out of SQLite (``json_object``) or PostgreSQL (``json_build_object``) as the JSON text of
the API's session object, computed fields included, with the same fields and values, field by field, as
:class:`~session_monitor.store.render.SessionRenderer` gives (``tests/unit/store/test_listing.py`` checks it
on both stores). Python only joins the rows, so a listing costs no Python per field; on SQLite the work runs
inside ``sqlite3_step`` without the GIL, on PostgreSQL in the database process.

Timestamps are written as ``orjson`` writes an aware UTC datetime (``2026-01-01T12:00:00.123456+00:00``, no
fraction when it is zero). The rounded seconds (``duration_seconds``, ``task_seconds``, ``idle_seconds``) are
Python's ``round(td.total_seconds(), 3)``: the database computes the exact microseconds ``d`` and renders
``(d + 500) // 1000`` milliseconds; where Python's binary rounding could differ (a tie, ``d % 1000 == 500``,
or a negative ``d``, e.g. after a clock step back) the row also carries ``d`` and Python renders that field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa

from session_monitor.store.models import UTCDateTime, sessions
from session_monitor.store.render import SESSION_FROM, effective_heartbeat
from session_monitor.store.streams import RowStream

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)

FIX_FIELDS = ("duration_seconds", "task_seconds", "idle_seconds")
"""The fields Python renders itself when the row carries their microseconds (see the module docstring)."""


def _key(name: str) -> sa.ColumnElement[Any]:
    return sa.literal_column(f"'{name}'")


def _text(col: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    """A timestamp column as SQLite stores it (``YYYY-MM-DD HH:MM:SS.ffffff``), without type processing."""
    return sa.type_coerce(col, sa.String())


class _Dialect:
    """How one database writes the pieces of a row."""

    def __init__(self, now: datetime) -> None:
        self.now = sa.bindparam("now", now, type_=UTCDateTime())

    def iso(self, col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        raise NotImplementedError

    def micros(self, later: sa.ColumnElement[Any] | None, col: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        """Exact microseconds from ``col`` to ``later`` (``None``: now)."""
        raise NotImplementedError

    def seconds(self, us: sa.ColumnElement[int]) -> sa.ColumnElement[Any]:
        """Non-negative microseconds as the JSON number of ``round(us / 1e6, 3)``."""
        raise NotImplementedError

    def flag(self, cond: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        raise NotImplementedError

    def json(self, col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        """A JSON column nested as JSON, not as a string (NULL stays null)."""
        return col


class _SQLite(_Dialect):
    def __init__(self, now: datetime) -> None:
        super().__init__(now)
        self.now_us = sa.bindparam("now_us", (now - _EPOCH) // _US, type_=sa.Integer())

    def iso(self, col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        # NULL stays NULL through replace() and ||.
        return sa.func.replace(sa.func.replace(_text(col), " ", "T"), ".000000", "").concat("+00:00")

    def _epoch_us(self, col: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        text = _text(col)
        # Whole seconds from the text without its fraction: SQLite's date functions round to milliseconds.
        seconds = sa.cast(sa.func.strftime("%s", sa.func.substr(text, 1, 19)), sa.Integer())
        return seconds * 1_000_000 + sa.cast(sa.func.substr(text, 21, 6), sa.Integer())

    def micros(self, later: sa.ColumnElement[Any] | None, col: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        end = self.now_us if later is None else self._epoch_us(later)
        return end - self._epoch_us(col)

    def seconds(self, us: sa.ColumnElement[int]) -> sa.ColumnElement[Any]:
        # A REAL: SQLite's JSON writes it with "%!.15g" (123.45, 120.0), exact for 15 digits.
        return ((us + 500) // 1000).op("/")(sa.literal_column("1000.0"))

    def flag(self, cond: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        # json('true') is a constant: evaluated once per statement, not once per row.
        return sa.case(
            (cond, sa.func.json(sa.literal_column("'true'"))), else_=sa.func.json(sa.literal_column("'false'"))
        )

    def json(self, col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.func.json(sa.type_coerce(col, sa.String()))

    def object(self, pairs: list[tuple[str, sa.ColumnElement[Any]]]) -> sa.ColumnElement[Any]:
        return sa.func.json_object(*(x for name, value in pairs for x in (_key(name), value)))


class _PostgreSQL(_Dialect):
    def iso(self, col: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        utc = sa.type_coerce(col, sa.DateTime()).op("AT TIME ZONE")(sa.literal_column("'UTC'"))
        shown = sa.func.to_char(utc, sa.literal_column("'YYYY-MM-DD\"T\"HH24:MI:SS.US'"))
        return sa.func.replace(shown, ".000000", "").concat("+00:00")

    def micros(self, later: sa.ColumnElement[Any] | None, col: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
        end = self.now if later is None else later
        span = sa.extract("epoch", end) - sa.extract("epoch", col)  # numeric: exact
        return sa.cast(span * 1_000_000, sa.BigInteger())

    def seconds(self, us: sa.ColumnElement[int]) -> sa.ColumnElement[Any]:
        ms = (sa.func.abs(us) + 500) // 1000  # a negative span is rendered by Python
        frac = sa.case(
            (ms % 1000 == 0, "0"),
            else_=sa.func.rtrim(sa.func.lpad(sa.cast(ms % 1000, sa.Text()), 3, "0"), "0"),
        )
        text = sa.cast(ms // 1000, sa.Text()).concat(".").concat(frac)
        return sa.cast(text, sa.JSON())

    def flag(self, cond: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return cond


def _fields(
    d: _Dialect, dialect: str, now: datetime, stale_after: timedelta
) -> tuple[list[tuple[str, sa.ColumnElement[Any]]], list[sa.ColumnElement[Any]]]:
    """The API's fields as expressions over :data:`SESSION_FROM`, and the columns of :data:`FIX_FIELDS`."""
    c = sessions.c
    live = c.ended_at.is_(None)
    heartbeat = effective_heartbeat()
    stale = sa.and_(live, heartbeat < sa.bindparam("cutoff", now - stale_after, type_=UTCDateTime()))
    state = sa.case(
        (c.ended_at.is_not(None), "ended"),
        (stale, "stale"),
        (c.disconnected_at.is_not(None), "disconnected"),
        else_=c.status,
    )
    duration_us = sa.case((live, d.micros(None, c.start_time)), else_=d.micros(c.ended_at, c.start_time))
    running = sa.and_(live, c.status == "running", c.task_started_at.is_not(None))
    task_us = sa.case((running, d.micros(None, c.task_started_at)))
    idle_us = sa.case(
        (c.last_interaction_at.is_(None), sa.null()),
        (live, d.micros(None, c.last_interaction_at)),
        else_=d.micros(c.ended_at, c.last_interaction_at),
    )
    zero = sa.literal_column("0.0") if dialect == "sqlite" else sa.cast(sa.literal_column("'0.0'"), sa.JSON())
    pairs: list[tuple[str, sa.ColumnElement[Any]]] = [
        ("session_id", c.session_id),
        ("app_name", c.app_name),
        ("user_id", c.user_id),
        ("start_time", d.iso(c.start_time)),
        ("last_heartbeat", d.iso(heartbeat)),
        ("duration_seconds", d.seconds(duration_us)),
        ("status", c.status),
        ("current_task", c.current_task),
        ("is_stale", d.flag(stale)),
        ("kill_requested", d.flag(c.kill_requested)),
        ("state", state),
        ("host", c.host),
        ("pid", c.pid),
        ("task_started_at", d.iso(c.task_started_at)),
        ("task_seconds", sa.case((running, d.seconds(task_us)))),
        ("kill_requested_at", d.iso(c.kill_requested_at)),
        ("kill_requested_by", c.kill_requested_by),
        ("kill_reason", c.kill_reason),
        ("ended_at", d.iso(c.ended_at)),
        ("end_reason", c.end_reason),
        ("ended_by", c.ended_by),
        ("agent_id", c.agent_id),
        ("visibility", c.visibility),
        ("last_interaction_at", d.iso(c.last_interaction_at)),
        # max(0.0, seconds): an interaction stamped after now (clocks apart) is idle 0.0.
        ("idle_seconds", sa.case((idle_us <= 0, zero), else_=d.seconds(idle_us))),
        ("disconnected_at", sa.case((live, d.iso(c.disconnected_at)))),
        ("changed_at", d.iso(c.changed_at)),
        ("cost", d.json(c.cost)),
        ("exempt", d.flag(c.exempt)),
    ]

    def needs_python(us: sa.ColumnElement[int], *, negative: bool) -> sa.ColumnElement[Any]:
        odd = us % 1000 == 500
        return sa.case((sa.or_(us < 0, odd) if negative else sa.and_(us > 0, odd), us))

    fixes: list[sa.ColumnElement[Any]] = [
        needs_python(duration_us, negative=True).label("duration_us"),
        needs_python(task_us, negative=True).label("task_us"),
        needs_python(idle_us, negative=False).label("idle_us"),
    ]
    return pairs, fixes


def json_query(
    dialect: str,
    now: datetime,
    stale_after: timedelta,
    *,
    where: Sequence[sa.ColumnElement[bool]],
    order: Sequence[tuple[sa.ColumnElement[Any], bool]] = (),
    limit: int | None = None,
    offset: int = 0,
) -> sa.Select[Any]:
    """Sessions matching ``where``, ordered by ``(column, descending)`` pairs: a row's JSON text and, for each
    of :data:`FIX_FIELDS`, its microseconds where Python renders it (see :func:`join_rows`)."""
    if dialect == "sqlite":
        lite = _SQLite(now)
        pairs, fixes = _fields(lite, dialect, now, stale_after)
        row = sa.type_coerce(lite.object(pairs), sa.String()).label("row")
        query = sa.select(row, *fixes).select_from(SESSION_FROM).where(*where)
        query = query.order_by(*(col.desc() if desc else col for col, desc in order))
        return query.limit(limit).offset(offset or None)
    pairs, fixes = _fields(_PostgreSQL(now), dialect, now, stale_after)
    # PostgreSQL: row_to_json of a row of named columns is several times faster than json_build_object
    # (and writes no spaces); the rows are ordered by their keys before the JSON is built.
    keys = [col.label(f"_key{i}") for i, (col, _) in enumerate(order)]
    inner = (
        sa.select(*(value.label(name) for name, value in pairs), *fixes, *keys)
        .select_from(SESSION_FROM)
        .where(*where)
        .order_by(*(key.desc() if desc else key for key, (_, desc) in zip(keys, order, strict=True)))
        .limit(limit)
        .offset(offset or None)
        .subquery("s")
    )
    fields = sa.select(*(inner.c[name] for name, _ in pairs)).correlate(inner).lateral("t")
    row = sa.cast(sa.func.row_to_json(sa.literal_column("t")), sa.Text()).label("row")
    outer_keys = [inner.c[key.name] for key in keys]
    return (
        sa.select(row, inner.c.duration_us, inner.c.task_us, inner.c.idle_us)
        .select_from(inner.join(fields, sa.true()))
        .order_by(*(key.desc() if desc else key for key, (_, desc) in zip(outer_keys, order, strict=True)))
    )


def _fixed(text: str, duration_us: int | None, task_us: int | None, idle_us: int | None) -> str:
    obj = orjson.loads(text)
    if duration_us is not None:
        obj["duration_seconds"] = round(duration_us / 1_000_000, 3)
    if task_us is not None:
        obj["task_seconds"] = round(task_us / 1_000_000, 3)
    if idle_us is not None:
        obj["idle_seconds"] = round(max(0.0, idle_us / 1_000_000), 3)
    return orjson.dumps(obj).decode()


def join_rows(rows: Iterable[Sequence[Any]]) -> tuple[bytes, int]:
    """The rows selected with :func:`json_columns` as ``row,row,...`` (UTF-8) and how many."""
    parts: list[str] = []
    for text, duration_us, task_us, idle_us in rows:
        if duration_us is None and task_us is None and idle_us is None:
            parts.append(text)
        else:
            parts.append(_fixed(text, duration_us, task_us, idle_us))
    return ",".join(parts).encode(), len(parts)


class SessionsJSON:
    """A listing as the JSON document ``{"sessions": [...], "total": n, ...}``, its rows streamed.

    ``total`` is the count query's answer when the listing is a page, else the number of rows read.
    """

    def __init__(self, rows: RowStream[tuple[bytes, int]]) -> None:
        self._rows = rows

    def _tail(self, count: int, extra: dict[str, Any]) -> bytes:
        total = self._rows.total if self._rows.total is not None else count
        fields = b"".join(b',"%s":%s' % (k.encode(), orjson.dumps(v)) for k, v in extra.items())
        return b'],"total":%d%s}' % (total, fields)

    def document(self, extra: dict[str, Any]) -> tuple[bytes, ...] | AsyncIterator[bytes]:
        """The whole document's consecutive parts when one chunk held every row, else its chunks (``extra``
        after ``total``). The parts are not joined: that would copy the whole answer once more."""
        first, count = self._rows.first
        if self._rows.done:
            return b'{"sessions":[', first, self._tail(count, extra)
        return self._chunks(first, count, extra)

    async def _chunks(self, first: bytes, count: int, extra: dict[str, Any]) -> AsyncIterator[bytes]:
        yield b'{"sessions":[' + first
        empty = not first
        async for chunk, n in self._rows.rest():
            if n:
                yield chunk if empty else b"," + chunk
                empty = False
                count += n
        yield self._tail(count, extra)

    def close(self) -> None:
        self._rows.close()
