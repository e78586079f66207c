"""Engines and the single write path, with the SQLite and PostgreSQL specifics kept here.

SQLite: WAL journal (readers never block the writer), ``synchronous=NORMAL``
(a commit survives a process crash; only an OS crash can lose the last
commits), a busy timeout, and exactly one write connection that starts its
transactions with ``BEGIN IMMEDIATE``; the writer drives it from a worker thread
(schema upgrades, before any write, use the async engine). Reads use their own
pooled connections, driven from their own threads (:data:`READ_THREADS`), so a
read never waits for the writer's thread nor for the event loop between rows.

Every write goes through :class:`BatchWriter`: concurrent writes are applied
in one transaction and acknowledged only after it commits (group commit), so
200 concurrent writers cost a handful of commits instead of 200 lock fights.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from session_monitor.errors import ConfigError, SessionMonitorError
from session_monitor.store import migrations
from session_monitor.store.streams import AsyncRowStream, Render, RowStream, ThreadRowStream, Unpack

logger = logging.getLogger(__name__)

T = TypeVar("T")
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PASSWORD_RE = re.compile(r"(://[^:/@]*:)[^@]*@")

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long a SQLite statement waits for a lock held by another connection."""

UPGRADE_LOCK_KEY = 0x534D_5550
"""PostgreSQL advisory lock held by the transaction that creates or upgrades the schema."""

MAX_BATCH = 512
"""Most writes applied in one transaction by the writer."""

SQLITE_READ_CACHE_KIB = 16 * 1024
"""SQLite read connections' page cache, which also bounds the memory a sort uses before it spills to disk."""

READ_THREADS = 4
"""SQLite: read connections, each driven from a thread of its own pool (not the writer's executor)."""


def normalize_url(url: str) -> sa.URL:
    """Map ``sqlite:///`` and ``postgresql://`` URLs to the async drivers we use; create SQLite's folder."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        shown = _PASSWORD_RE.sub(r"\1***@", url)
        raise ConfigError(
            f"invalid database URL {shown!r}: {exc}; use sqlite:///PATH or postgresql://USER@HOST/DB"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
        if parsed.database and parsed.database != ":memory:":
            # SQLite does not expand ``~``: open the same file whose folder we create.
            path = Path(parsed.database).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            parsed = parsed.set(database=str(path))
        return parsed
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    shown = parsed.render_as_string(hide_password=True)
    raise ConfigError(f"unsupported database {backend!r} in {shown!r}: use sqlite:///PATH or postgresql://...")


@dataclass
class _Op:
    fn: Callable[[sa.Connection], Any]
    future: asyncio.Future[Any]


def _run_ops(conn: sa.Connection, fns: list[Callable[[sa.Connection], Any]]) -> list[tuple[bool, Any]]:
    """Apply a batch; a domain error (raised before the op writes anything) fails only that op."""
    outcomes: list[tuple[bool, Any]] = []
    for fn in fns:
        try:
            outcomes.append((True, fn(conn)))
        except SessionMonitorError as exc:
            outcomes.append((False, exc))
    return outcomes


def _run_batch(engine: sa.Engine, fns: list[Callable[[sa.Connection], Any]]) -> list[tuple[bool, Any]]:
    with engine.begin() as conn:
        return _run_ops(conn, fns)


@dataclass
class BatchWriter:
    """The one write path: a task that applies queued writes in batches, one transaction per batch."""

    engine: AsyncEngine
    max_batch: int = MAX_BATCH
    on_batch: Callable[[int], None] | None = None
    sync_engine: sa.Engine | None = None
    """When set (SQLite), each batch runs on it in a worker thread: one event-loop round trip per batch
    instead of several per statement, so a busy loop (listing 10,000 sessions) no longer stalls commits."""
    _queue: asyncio.Queue[_Op | None] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    _closed: bool = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="session-monitor-writer")

    async def submit(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn(connection)`` inside a write transaction; return once it has committed."""
        if self._closed:
            raise RuntimeError("store is closed")
        self.start()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(fn, future))
        return await future

    async def close(self) -> None:
        """Apply what is queued, then stop."""
        self._closed = True
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            op = await self._queue.get()
            if op is None:
                return
            batch = [op]
            stop = False
            while len(batch) < self.max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await self._apply(batch)
            if stop:
                return

    async def _apply(self, batch: list[_Op]) -> None:
        try:
            if self.sync_engine is not None:
                outcomes = await asyncio.to_thread(_run_batch, self.sync_engine, [op.fn for op in batch])
            else:
                async with self.engine.begin() as conn:
                    outcomes = await conn.run_sync(_run_ops, [op.fn for op in batch])
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            # One op broke the transaction: retry each alone, so only the culprit fails.
            logger.warning("write batch of %d failed (%s); retrying one by one", len(batch), exc)
            for op in batch:
                await self._apply([op])
            return
        if self.on_batch is not None:
            self.on_batch(len(batch))
        for op, (ok, value) in zip(batch, outcomes, strict=True):
            if op.future.done():  # the caller went away; the write stands
                continue
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)


class Database:
    """A read engine, a single-connection write engine and the writer that owns it."""

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False) -> None:
        self.url = normalize_url(url)
        self.dialect = self.url.get_backend_name()
        if schema is not None and (self.dialect != "postgresql" or not _SCHEMA_RE.match(schema)):
            raise ConfigError(f"database schema {schema!r}: only for PostgreSQL, lower-case letters, digits and _")
        self.schema = schema
        if self.dialect == "sqlite":
            memory = self.url.database in (None, "", ":memory:")
            # One write connection: the writer task is its only user.
            kwargs: dict[str, Any] = {"poolclass": StaticPool} if memory else {"pool_size": 1, "max_overflow": 0}
            self.write_engine = create_async_engine(self.url, echo=echo, **kwargs)
            self.read_engine = self.write_engine if memory else create_async_engine(self.url, echo=echo)
            _configure_sqlite(self.write_engine, immediate=True)
            if self.read_engine is not self.write_engine:
                _configure_sqlite(self.read_engine, immediate=False)
        else:
            connect_args: dict[str, Any] = {}
            if schema:
                connect_args["server_settings"] = {"search_path": schema}
            self.write_engine = create_async_engine(
                self.url, echo=echo, pool_size=2, max_overflow=0, pool_pre_ping=True, connect_args=connect_args
            )
            self.read_engine = create_async_engine(
                self.url, echo=echo, pool_size=8, max_overflow=4, pool_pre_ping=True, connect_args=connect_args
            )
        self.sync_write_engine: sa.Engine | None = None
        self.sync_read_engine: sa.Engine | None = None
        self.read_executor: ThreadPoolExecutor | None = None
        if self.dialect == "sqlite" and self.read_engine is not self.write_engine:
            self.sync_read_engine = sa.create_engine(
                self.url.set(drivername="sqlite+pysqlite"),
                echo=echo,
                pool_size=READ_THREADS,
                max_overflow=0,
                connect_args={"check_same_thread": False},
            )
            _configure_sqlite(self.sync_read_engine, immediate=False)
            self.read_executor = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="session-monitor-read")
            # The writer's own connection, driven from a worker thread (see BatchWriter.sync_engine).
            self.sync_write_engine = sa.create_engine(
                self.url.set(drivername="sqlite+pysqlite"),
                echo=echo,
                pool_size=1,
                max_overflow=0,
                connect_args={"check_same_thread": False},
            )
            _configure_sqlite(self.sync_write_engine, immediate=True)
        self.writer = BatchWriter(self.write_engine, sync_engine=self.sync_write_engine)

    async def upgrade(self) -> list[int]:
        """Create or upgrade the schema in place; returns the versions applied."""
        async with self.write_engine.begin() as conn:
            if self.dialect == "postgresql":
                # Replicas starting together: one upgrades, the others wait and then find nothing to do.
                await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({UPGRADE_LOCK_KEY})")
            if self.schema:
                await conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            applied = await conn.run_sync(migrations.upgrade)
        if applied:
            logger.info("database schema upgraded: applied versions %s", applied)
        return applied

    async def write(self, fn: Callable[[sa.Connection], T]) -> T:
        return await self.writer.submit(fn)

    async def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """Run ``fn(connection)`` on a read connection (SQLite: on a read thread)."""
        if self.sync_read_engine is not None:
            return await asyncio.get_running_loop().run_in_executor(
                self.read_executor, _read_sync, self.sync_read_engine, fn
            )
        async with self.read_engine.connect() as conn:
            return await conn.run_sync(fn)

    async def stream(
        self,
        query: sa.Select[Any],
        render: Render[T],
        *,
        chunk_rows: int,
        count: sa.Select[Any] | None = None,
        unpack: Unpack | None = None,
    ) -> RowStream[T]:
        """``render`` of the rows of ``query``, ``chunk_rows`` at a time, in one read transaction.

        The first chunk (and ``count``, when given) is read before this returns, so a failing query fails
        here, before an answer has started; close the stream (or read it to its end) to free its connection.
        ``unpack``: ``query`` packs its rows into one, and this gives them back (read whole, then chunked).
        """
        stream: RowStream[T]
        if self.sync_read_engine is not None:
            assert self.read_executor is not None
            stream = ThreadRowStream(
                self.sync_read_engine, self.read_executor, query, render, chunk_rows, count, unpack
            )
        else:
            stream = AsyncRowStream(self.read_engine, query, render, chunk_rows, count, unpack)
        await stream.open()
        return stream

    async def close(self) -> None:
        await self.writer.close()
        if self.sync_write_engine is not None:
            self.sync_write_engine.dispose()
        if self.read_executor is not None:
            self.read_executor.shutdown(wait=True)
        if self.sync_read_engine is not None:
            self.sync_read_engine.dispose()
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()

    def describe(self) -> str:
        """The URL with any password hidden, for logs."""
        return self.url.render_as_string(hide_password=True)


def _read_sync(engine: sa.Engine, fn: Callable[[sa.Connection], T]) -> T:
    with engine.connect() as conn:
        return fn(conn)


def _configure_sqlite(engine: AsyncEngine | sa.Engine, *, immediate: bool) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    # pysqlite's own transaction handling skips BEGIN for DDL and breaks SAVEPOINT;
    # take it over as SQLAlchemy's docs recommend, and make the writer's BEGIN IMMEDIATE.
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if not immediate:
            # A listing of 10,000 sorts 6 MB of rendered rows: in memory, not through temporary files.
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_READ_CACHE_KIB}")
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(begin)


def make_database(url: str, *, schema: str | None = None) -> Database:
    return Database(url, schema=schema)
