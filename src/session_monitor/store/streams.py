"""Row streams: a query's rows read in chunks in one read transaction, so a listing of 100,000 stays small.

SQLite's stream fetches and renders each chunk on a read thread (the event loop only awaits it);
PostgreSQL's reads a server-side cursor on the event loop. Both read the first chunk at once, so a failing
query fails before an answer has started.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncResult

T = TypeVar("T")


class TwoStep(Generic[T]):
    """A chunk's rendering that reads more rows first: ``plan(rows)`` gives the queries (run in the stream's
    transaction), ``finish(rows, their rows)`` renders the chunk."""

    def __init__(
        self,
        plan: Callable[[Sequence[Any]], list[sa.Select[Any]]],
        finish: Callable[[Sequence[Any], Sequence[Any]], T],
    ) -> None:
        self.plan, self.finish = plan, finish


Render = Callable[[Sequence[sa.Row[Any]]], T] | TwoStep[T]
"""How a stream renders a chunk of rows: one function of the rows, or :class:`TwoStep`."""

Unpack = Callable[[Sequence[sa.Row[Any]]], list[Any]]
"""For a query that packs its rows into one (e.g. SQLite's ``group_concat``): the rows it packed."""


class _Unpacked:
    """The rows of a packed query's answer, handed out as ``fetchmany`` would."""

    def __init__(self, rows: list[Any]) -> None:
        self._rows, self._at = rows, 0

    def fetchmany(self, size: int) -> list[Any]:
        chunk = self._rows[self._at : self._at + size]
        self._at += len(chunk)
        return chunk


def _render_sync(render: Render[T], conn: sa.Connection, rows: Sequence[Any]) -> T:
    if isinstance(render, TwoStep):
        fetched = [row for query in render.plan(rows) for row in conn.execute(query)]
        return render.finish(rows, fetched)
    return render(rows)


async def _render_async(render: Render[T], conn: AsyncConnection, rows: Sequence[Any]) -> T:
    if isinstance(render, TwoStep):
        fetched = [row for query in render.plan(rows) for row in (await conn.execute(query)).all()]
        return render.finish(rows, fetched)
    return render(rows)


class RowStream(Generic[T]):
    """Chunks of a query's rows, each passed through ``render``; ``first`` and ``total`` are read at once."""

    first: T
    chunk_rows: int
    total: int | None = None
    """The ``count`` query's answer, read in the same transaction as the rows."""
    done: bool = False
    """True once the last chunk was read (the connection is then released)."""

    async def open(self) -> None:
        raise NotImplementedError

    async def next(self) -> T:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection; safe to call at any time, also while a chunk is being read."""
        raise NotImplementedError

    _carry: list[Any]
    """A row read ahead of its chunk: a chunk of exactly ``chunk_rows`` is known to be the last one at once."""

    async def rest(self) -> AsyncIterator[T]:
        """The chunks after ``first``; the stream is closed when this ends, however it ends."""
        try:
            while not self.done:
                yield await self.next()
        finally:
            self.close()


def _split(carry: list[Any], fetched: Sequence[Any], stream: RowStream[Any]) -> tuple[list[Any], bool]:
    """The next chunk from what was carried and fetched (one row more than a chunk), and whether it is the last."""
    rows = [*carry, *fetched]
    size = stream.chunk_rows
    stream._carry = rows[size:]
    return rows[:size], len(rows) <= size


class ThreadRowStream(RowStream[T]):
    """SQLite: the rows are fetched and rendered on a read thread; the event loop only awaits each chunk."""

    def __init__(
        self,
        engine: sa.Engine,
        executor: ThreadPoolExecutor,
        query: sa.Select[Any],
        render: Render[T],
        chunk_rows: int,
        count: sa.Select[Any] | None,
        unpack: Unpack | None = None,
    ) -> None:
        self._engine, self._executor, self._query, self._render = engine, executor, query, render
        self.chunk_rows, self._count, self._carry, self._unpack = chunk_rows, count, [], unpack
        self._lock = threading.Lock()
        self._conn: sa.Connection | None = None
        self._result: sa.CursorResult[Any] | _Unpacked | None = None

    def _open(self) -> tuple[int | None, T, bool]:
        with self._lock:
            self._conn = self._engine.connect()
            try:
                total = None if self._count is None else int(self._conn.execute(self._count).scalar_one())
                result = self._conn.execute(self._query)
                self._result = result if self._unpack is None else _Unpacked(self._unpack(result.all()))
                first, done = self._fetch()
            except BaseException:
                self._release()
                raise
            return total, first, done

    def _fetch(self) -> tuple[T, bool]:
        assert self._result is not None
        assert self._conn is not None
        rows, done = _split(self._carry, self._result.fetchmany(self.chunk_rows + 1 - len(self._carry)), self)
        try:
            return _render_sync(self._render, self._conn, rows), done
        finally:
            if done:
                self._release()

    def _next(self) -> tuple[T, bool]:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("row stream is closed")
            return self._fetch()

    def _release(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = self._result = None

    def _close(self) -> None:
        with self._lock:
            self._release()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.total, self.first, self.done = await loop.run_in_executor(self._executor, self._open)

    async def next(self) -> T:
        chunk, self.done = await asyncio.get_running_loop().run_in_executor(self._executor, self._next)
        return chunk

    def close(self) -> None:
        self.done = True
        if self._conn is not None:
            # On the read threads, after a chunk still being read (the lock): never blocks the event loop.
            try:
                self._executor.submit(self._close)
            except RuntimeError:  # the executor is shut down: no chunk is being read any more
                self._release()


class AsyncRowStream(RowStream[T]):
    """PostgreSQL (and in-memory SQLite): a server-side cursor read on the event loop."""

    def __init__(
        self,
        engine: AsyncEngine,
        query: sa.Select[Any],
        render: Render[T],
        chunk_rows: int,
        count: sa.Select[Any] | None,
        unpack: Unpack | None = None,
    ) -> None:
        self._engine, self._query, self._render = engine, query, render
        self.chunk_rows, self._count, self._carry, self._unpack = chunk_rows, count, [], unpack
        self._conn: AsyncConnection | None = None
        self._result: AsyncResult[Any] | None = None
        self._unpacked: _Unpacked | None = None
        self._closing: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._conn = await self._engine.connect()
        try:
            if self._count is not None:
                self.total = int((await self._conn.execute(self._count)).scalar_one())
            if self._unpack is not None:
                self._unpacked = _Unpacked(self._unpack((await self._conn.execute(self._query)).all()))
            else:
                self._result = await self._conn.stream(self._query.execution_options(yield_per=self.chunk_rows + 1))
            self.first = await self.next()
        except BaseException:
            await self._release()
            raise

    async def next(self) -> T:
        size = self.chunk_rows + 1 - len(self._carry)
        if self._unpacked is not None:  # released with the connection
            fetched: Sequence[Any] = self._unpacked.fetchmany(size)
        elif self._result is not None:
            fetched = await self._result.fetchmany(size)
        else:
            raise RuntimeError("row stream is closed")
        rows, done = _split(self._carry, fetched, self)
        assert self._conn is not None
        try:
            return await _render_async(self._render, self._conn, rows)
        finally:
            if done:
                self.done = True
                await self._release()

    async def _release(self) -> None:
        result, conn = self._result, self._conn
        self._result = self._conn = self._unpacked = None
        if result is not None:
            await result.close()
        if conn is not None:
            await conn.close()

    def close(self) -> None:
        self.done = True
        if self._conn is not None and self._closing is None:
            # A task of its own: the caller may be a cancelled response whose awaits would fail.
            self._closing = asyncio.get_running_loop().create_task(self._release())
