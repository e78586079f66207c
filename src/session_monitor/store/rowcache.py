"""A per-process cache of session rows' JSON, so a listing reads three small columns per row, not 27 fields.

Every field of a session's JSON except the time-dependent ones (:data:`DYNAMIC_FIELDS`) changes only by a
write, and every such write stamps ``changed_at`` with the writer's clock. A listing therefore selects only
``session_id``, ``changed_at`` and the effective heartbeat per row (:func:`key_columns`); a row cached under
the same ``changed_at`` is served from its cached bytes with the time-dependent fields spliced in, any other
row is read whole and rendered by :class:`~session_monitor.store.render.SessionRenderer` (the reference), and
cached. A write by another replica moves ``changed_at``, so the row misses and is read again.

A row is cached only once its ``changed_at`` is :data:`SETTLE` older than the listing's clock: a second write
with the same stamp would need a clock that went back by more than that and hit the same microsecond. (A
frozen clock, as in tests, caches nothing written at its time.) Rows not seen by any listing for
:data:`IDLE_EVICT_S` are dropped, and at most :data:`MAX_ROWS` are kept.

A new field of a session row is added to the renderer's dict only: it lands in the cached bytes, so it must
change only by writes that stamp ``changed_at``. A field that changes with time (or by writes that do not
stamp ``changed_at``) goes into :data:`DYNAMIC_FIELDS` and :meth:`RowCache.render`'s splice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import sqlalchemy as sa

from session_monitor.store.models import sessions
from session_monitor.store.render import SessionRenderer, effective_heartbeat

DYNAMIC_FIELDS = ("last_heartbeat", "duration_seconds", "is_stale", "state", "task_seconds", "idle_seconds")
"""The fields computed anew for every listing, in the order they appear in a row."""

SETTLE = timedelta(milliseconds=500)
"""How old a row's ``changed_at`` must be before its JSON is cached."""

MAX_ROWS = 250_000
"""Most rows cached (beyond it, rows are rendered without being cached)."""

IDLE_EVICT_S = 60.0
"""Rows not seen by a listing for this long are dropped."""

REFETCH_ROWS = 900
"""Rows read whole per query (``IN`` list), under SQLite's bound-parameter limit."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_TRUE, _FALSE, _NULL, _STALE = b"true", b"false", b"null", b'"stale"'


def _us(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _US


def _sqlite_text(value: datetime) -> str:
    """A UTC datetime as SQLite stores it (fixed width, so text order is time order)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _iso(value: datetime) -> bytes:
    """An aware datetime's JSON, right-sized: ``orjson``'s own answer keeps a buffer of several KiB."""
    return bytes(memoryview(orjson.dumps(value)))


def _iso_us(us: int) -> bytes:
    """Microseconds since the epoch as :func:`_iso` writes the datetime."""
    return _iso(_EPOCH + timedelta(microseconds=us))


def _sqlite_iso(text: str) -> bytes:
    """Stored SQLite text as ``orjson`` writes the aware datetime (no fraction when it is zero)."""
    iso = text.replace(" ", "T", 1)
    if iso.endswith(".000000"):
        iso = iso[:-7]
    return b'"%s+00:00"' % iso.encode()


class _Entry:
    """One row's cached bytes: ``parts[0] v0 parts[1] v1 ... parts[n]`` with the dynamic values ``v``."""

    __slots__ = (
        "after", "beat", "changed", "idle_us", "parts", "seen", "start_us", "state", "task_us", "until_us", "whole"
    )  # fmt: skip

    def __init__(self, d: dict[str, Any], changed: Any, seen: float) -> None:
        self.changed, self.seen = changed, seen
        ended_us = _us(d["ended_at"])
        self.until_us = ended_us  # None: live, the spans run to now
        self.start_us: int = _us(d["start_time"])  # type: ignore[assignment]
        running = ended_us is None and d["status"] == "running" and d["task_started_at"] is not None
        self.task_us = _us(d["task_started_at"]) if running else None
        self.idle_us = _us(d["last_interaction_at"])
        # The state when not stale (a stale session can only be live).
        # A copy: orjson's own answer keeps a buffer of several KiB.
        self.state = bytes(memoryview(orjson.dumps(d["state"] if d["state"] != "stale" else _fresh_state(d))))
        parts: list[bytes] = []
        static: dict[str, Any] = {}
        head = b"{"
        for name, value in d.items():
            if name in _DYNAMIC:
                if name != DYNAMIC_FIELDS[len(parts)]:
                    raise RuntimeError(f"{name} out of the order of DYNAMIC_FIELDS")
                body = orjson.dumps(static)[1:-1] + b"," if static else b""
                parts.append(head + body + b'"%s":' % name.encode())
                head, static = b",", {}
            else:
                static[name] = value
        parts.append((head + orjson.dumps(static)[1:-1] if static else b"") + b"}")
        if len(parts) != len(DYNAMIC_FIELDS) + 1:
            raise RuntimeError("a session row lacks one of DYNAMIC_FIELDS")
        self.parts = tuple(parts)
        # What follows the duration when the row is not stale: up to task_seconds, or all of it when the row
        # has no task or idle seconds (``whole``).
        middle = b"".join((parts[2], _FALSE, parts[3], self.state, parts[4]))
        self.whole = self.task_us is None and self.idle_us is None
        self.after = b"".join((middle, _NULL, parts[5], _NULL, parts[6])) if self.whole else middle
        self.beat: tuple[Any, bytes] = (None, b"")


_DYNAMIC = frozenset(DYNAMIC_FIELDS)


def _fresh_state(d: dict[str, Any]) -> str:
    return "disconnected" if d["disconnected_at"] is not None else str(d["status"])


EXACT_UNTIL = datetime(2106, 2, 7, tzinfo=UTC)
"""Until when :func:`epoch_us` is exact (2**32 seconds after the epoch)."""


def epoch_us(col: sa.ColumnElement[Any]) -> sa.ColumnElement[int]:
    """PostgreSQL: a timestamp as microseconds since the epoch, exact until :data:`EXACT_UNTIL`.

    ``date_part`` gives the seconds as a double: below 2**32 s its error and that of the product are each
    under a quarter of a microsecond, so rounding to an integer gives the exact microsecond. ``extract``
    (exact, a numeric) cost 3.5 ms per 10,000 rows against 0.8 ms (tests/unit/store/test_listing.py checks
    the edges).
    """
    seconds = sa.func.date_part(sa.literal_column("'epoch'"), col)
    return sa.cast(seconds * sa.literal_column("1000000"), sa.BigInteger())


def key_columns(dialect: str) -> list[sa.ColumnElement[Any]]:
    """What a cached listing selects per row: id, ``changed_at`` and heartbeat, compared as they come.

    SQLite: the stored text (fixed width, so text order is time order). PostgreSQL: microseconds since the
    epoch, as integers: asyncpg's decoding of 20,000 ``timestamptz`` into datetimes took 6 of a 10,000-row
    listing's 15 ms of fetching.
    """
    if dialect == "sqlite":
        return [
            sessions.c.session_id,
            sa.type_coerce(sessions.c.changed_at, sa.String()).label("changed_at"),
            sa.type_coerce(effective_heartbeat(), sa.String()).label("last_heartbeat"),
        ]
    return [
        sessions.c.session_id,
        epoch_us(sessions.c.changed_at).label("changed_at"),
        epoch_us(effective_heartbeat()).label("last_heartbeat"),
    ]


_SEP = "\x1f"
"""Between packed values: a control character, which no stored id or timestamp holds (they are refused)."""


def packed_keys(query: sa.Select[Any], dialect: str) -> tuple[sa.Select[Any], Callable[[Sequence[Any]], list[Any]]]:
    """The key columns of ``query`` (:func:`key_columns`, in its order) packed into one row, and the function
    that gives the rows back: on SQLite three ``group_concat`` texts, on PostgreSQL three ``array_agg`` arrays.

    SQLite: the sqlite3 module releases the GIL around each row's step and takes it back after; beside an event
    loop busy with heartbeats each of 10,000 steps could wait for it, and a listing took 95 ms instead of 45.
    One row is one step, and splitting three texts costs about 2 ms. PostgreSQL: no server-side cursor and no
    per-row result processing (a 10,000-row listing 32 -> 28 ms in process, 100,000 rows 715 -> 355 ms).
    Both read the subquery's rows in its order: neither flattens an ordered subquery into an aggregate over
    it alone (PostgreSQL's manual: "supplying the input values from a sorted subquery will usually work",
    failing only when the outer query joins), and the listing tests check the order on both.
    """
    keys = query.subquery("k")
    if dialect == "postgresql":
        c = keys.c
        arrays = sa.select(
            sa.func.array_agg(c.session_id), sa.func.array_agg(c.changed_at), sa.func.array_agg(c.last_heartbeat)
        )

        def unpack_arrays(rows: Sequence[Any]) -> list[Any]:
            ids, changed, beats = rows[0]
            return [] if ids is None else list(zip(ids, changed, beats, strict=True))

        return cast("sa.Select[Any]", arrays), unpack_arrays
    sep = sa.literal(_SEP)
    texts = sa.select(
        sa.func.group_concat(keys.c.session_id, sep),
        sa.func.group_concat(sa.func.coalesce(keys.c.changed_at, ""), sep),
        sa.func.group_concat(keys.c.last_heartbeat, sep),
    )

    def unpack_texts(rows: Sequence[Any]) -> list[Any]:
        ids, changed, beats = rows[0]
        if ids is None:
            return []
        stamps = [stamp or None for stamp in changed.split(_SEP)]
        return list(zip(ids.split(_SEP), stamps, beats.split(_SEP), strict=True))

    return texts, unpack_texts


class RowCache:
    """Session rows' JSON by id, for one store instance (see the module docstring)."""

    def __init__(self, renderer: SessionRenderer, dialect: str, select_full: Callable[[], sa.Select[Any]]) -> None:
        self._renderer, self._select_full = renderer, select_full
        self._sqlite = dialect == "sqlite"
        self._rows: dict[str, _Entry] = {}
        self._swept = time.monotonic()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def plan(self, keys: Sequence[Any]) -> list[sa.Select[Any]]:
        """The queries reading whole the rows of ``keys`` (from :func:`key_columns`) that are not cached."""
        rows = self._rows
        missing = []
        for sid, changed, _ in keys:
            entry = rows.get(sid)
            if entry is None or entry.changed != changed:
                missing.append(sid)
        full = self._select_full()
        return [
            full.where(sessions.c.session_id.in_(missing[i : i + REFETCH_ROWS]))
            for i in range(0, len(missing), REFETCH_ROWS)
        ]

    def render(self, keys: Sequence[Any], fetched: Sequence[Any], now: datetime) -> tuple[bytes, int]:
        """The rows of ``keys`` as ``row,row,...`` and how many; ``fetched``: the rows :meth:`plan` asked for."""
        seen = time.monotonic()
        key: Callable[[datetime], Any] = _sqlite_text if self._sqlite else _us
        settled_key = key(now - SETTLE)
        fresh: dict[str, bytes] = {}
        rows = self._rows
        for row in fetched:
            d = self._renderer(row, now)
            fresh[d["session_id"]] = bytes(memoryview(orjson.dumps(d)))  # right-sized (see _Entry.state)
            changed = row.changed_at if self._sqlite or row.changed_at is None else _us(row.changed_at)
            if changed is not None and changed < settled_key and len(rows) < MAX_ROWS:
                cached = _Entry(d, changed, seen)
                with self._lock:  # listings render on several read threads; a sweep must not see it grow
                    rows[d["session_id"]] = cached
        now_us: int = _us(now)  # type: ignore[assignment]
        cutoff_key = key(now - self._renderer.stale_after)
        iso: Callable[[Any], bytes] = _sqlite_iso if self._sqlite else _iso_us
        dumps = orjson.dumps
        out: list[bytes] = []
        append = out.append
        for sid, changed, hb in keys:
            if fresh:
                text = fresh.get(sid)
                if text is not None:
                    append(text)
                    continue
            entry = rows.get(sid)
            if entry is None or entry.changed != changed:
                continue  # gone between the two reads (PostgreSQL reads each statement's own snapshot)
            entry.seen = seen
            beat = entry.beat  # (heartbeat, the row's bytes up to the duration): one attribute, threads may race
            if beat[0] != hb:
                p = entry.parts
                beat = entry.beat = (hb, b"".join((p[0], iso(hb), p[1])))
            until = entry.until_us
            if until is None:
                until = now_us
                stale = hb < cutoff_key
            else:
                stale = False
            duration = dumps(round((until - entry.start_us) / 1_000_000, 3))
            if not stale and entry.whole:
                append(b"".join((beat[1], duration, entry.after)))
                continue
            p = entry.parts
            middle = b"".join((p[2], _TRUE, p[3], _STALE, p[4])) if stale else entry.after
            task_us, idle_us = entry.task_us, entry.idle_us
            append(
                b"".join(
                    (
                        beat[1],
                        duration,
                        middle,
                        _NULL if task_us is None else dumps(round((now_us - task_us) / 1_000_000, 3)),
                        p[5],
                        _NULL if idle_us is None else dumps(round(max(0.0, (until - idle_us) / 1_000_000), 3)),
                        p[6],
                    )
                )
            )
        self.hits += len(out) - len(fresh)
        self.misses += len(fresh)
        if seen - self._swept > IDLE_EVICT_S:
            self._sweep(seen)
        return b",".join(out), len(out)

    def _sweep(self, now_s: float) -> None:
        limit = now_s - IDLE_EVICT_S
        with self._lock:
            for sid in [sid for sid, e in self._rows.items() if e.seen < limit]:
                del self._rows[sid]
            self._swept = now_s

    def __len__(self) -> int:
        return len(self._rows)
