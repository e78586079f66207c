"""Replicas on one PostgreSQL: cross-replica command wake-ups and the reaper's leadership, on one connection.

Each replica keeps one dedicated asyncpg connection (outside the SQLAlchemy pools, which
hand connections back after each use and so can neither stay ``LISTEN``ing nor hold a
session lock):

- **wake-ups**: the replica that committed a kill sends ``NOTIFY <channel>, '<replica> <agent>,...'``;
  every replica ``LISTEN``s and wakes the long-polls it holds for those agents (its own
  notifications are skipped: :meth:`CommandHub.notify` woke them already). After the
  connection was lost, notifications may have been missed, so a reconnect wakes every
  long-poll of the replica: each re-reads its commands.
- **reaper leadership**: the session-level advisory lock ``pg_try_advisory_lock`` on the same
  connection. Chosen over a per-pass ``pg_try_advisory_xact_lock``: a pass is several write
  transactions (expiry, history purge, command and agent purge), and a per-pass lock would let
  every replica reap once per interval, each a little after the other; the session lock gives
  one stable reaper, released by PostgreSQL as soon as its connection ends (a replica that is
  SIGKILLed, or whose host vanishes, once TCP keepalive notices), and another replica takes over
  at its next interval. Reaping is idempotent, so the short overlap possible when the leader's
  connection drops during a pass is harmless.

Both channel and lock are scoped by the PostgreSQL schema, so deployments sharing a database
in different schemas neither wake nor block each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import zlib
from typing import Any

from session_monitor.server.commands import CommandHub

logger = logging.getLogger(__name__)

PING_INTERVAL_S = 5.0
"""How often an idle coordination connection is checked (a dead one is replaced)."""

RECONNECT_MAX_S = 5.0
"""Longest wait between two attempts to reconnect."""

STATEMENT_TIMEOUT_S = 5.0
"""Timeout of one statement on the coordination connection."""

MAX_PAYLOAD_BYTES = 7_900
"""PostgreSQL refuses NOTIFY payloads of 8,000 bytes or more."""

LOCK_CLASS = 0x534D
"""First key of the reaper's advisory lock (``SM``); the second is derived from the schema."""


def _scope(schema: str | None) -> int:
    """A signed 32-bit number naming the schema (0 for the default one)."""
    if not schema:
        return 0
    value = zlib.crc32(schema.encode())
    return value - 2**32 if value >= 2**31 else value


def channel_name(schema: str | None) -> str:
    return "sm_commands" if not schema else f"sm_commands_{_scope(schema) & 0xFFFFFFFF:08x}"


def payloads(sender: str, agent_ids: list[str]) -> list[str]:
    """``'<sender> id,id,...'`` messages, each under PostgreSQL's payload limit."""
    out: list[str] = []
    current: list[str] = []
    size = len(sender) + 1
    for agent_id in agent_ids:
        if current and size + len(agent_id) + 1 > MAX_PAYLOAD_BYTES:
            out.append(f"{sender} {','.join(current)}")
            current, size = [], len(sender) + 1
        current.append(agent_id)
        size += len(agent_id) + 1
    if current:
        out.append(f"{sender} {','.join(current)}")
    return out


class PgCoordinator:
    """The replica's coordination connection: publishes and receives wake-ups, holds the reaper's lock."""

    def __init__(self, dsn: str, hub: CommandHub, *, schema: str | None = None, on_wake: Any = None) -> None:
        self.dsn = dsn
        self.hub = hub
        self.replica_id = secrets.token_hex(6)
        self.channel = channel_name(schema)
        self.lock_key = (LOCK_CLASS, _scope(schema))
        self.on_wake = on_wake
        """Called with the number of agents woken by another replica's notification (metrics)."""
        self.leading = False
        """Whether this replica holds the reaper's lock (as far as it knows: a dead connection released it)."""
        self.connects = 0
        self._conn: Any = None
        self._pending: dict[str, None] = {}
        """Agents to announce, in order, each once (bounded by the number of agents while disconnected)."""
        self._kick = asyncio.Event()
        self._lock = asyncio.Lock()
        self._connected = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait_s: float = STATEMENT_TIMEOUT_S) -> None:
        """Start the connection task and wait (up to ``wait_s``) for the first connection."""
        self.hub.publisher = self.publish
        self._task = asyncio.create_task(self._run(), name="session-monitor-coordination")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), wait_s)

    async def close(self) -> None:
        self._closing = True
        self.hub.publisher = None
        self._kick.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop()

    def publish(self, agent_ids: list[str]) -> None:
        """Queue a notification to the other replicas; sent by the connection task at once."""
        self._pending.update(dict.fromkeys(agent_ids))
        self._kick.set()

    async def try_lead(self) -> bool:
        """Whether this replica should run the reaper now: it holds, or has just taken, the advisory lock."""
        import asyncpg  # type: ignore[import-untyped]

        conn = self._conn
        if conn is None or conn.is_closed():
            self.leading = False
            return False
        try:
            async with self._lock:
                if self.leading:  # the lock lives as long as the connection: check that it does
                    await conn.fetchval("SELECT 1", timeout=STATEMENT_TIMEOUT_S)
                    return True
                got = await conn.fetchval(
                    "SELECT pg_try_advisory_lock($1, $2)", *self.lock_key, timeout=STATEMENT_TIMEOUT_S
                )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning("reaper lock: coordination connection failed (%s)", exc)
            self.leading = False
            self._kick.set()  # let the connection task notice and reconnect
            return False
        if got:
            logger.info("this replica (%s) now runs the reaper", self.replica_id)
        self.leading = bool(got)
        return self.leading

    # -- connection task ----------------------------------------------------------------------------

    async def _run(self) -> None:
        import asyncpg

        delay_s = 0.1
        while not self._closing:
            try:
                conn = await asyncpg.connect(self.dsn, timeout=STATEMENT_TIMEOUT_S)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if delay_s <= 0.1:
                    logger.warning("coordination connection to PostgreSQL failed (%s); retrying", exc)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RECONNECT_MAX_S)
                continue
            delay_s = 0.1
            self._conn = conn
            try:
                await conn.add_listener(self.channel, self._on_notification)
                conn.add_termination_listener(lambda _conn: self._kick.set())
                self.connects += 1
                if self.connects > 1:
                    logger.info("coordination connection restored; waking every long-poll to re-read")
                self.hub.wake_all()  # notifications sent while we were away are lost: re-read
                self._connected.set()
                await self._serve(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if not self._closing:
                    logger.warning("coordination connection lost (%s); reconnecting", exc)
            finally:
                await self._drop()

    async def _serve(self, conn: Any) -> None:
        """Send queued notifications as they come; check the idle connection every ``PING_INTERVAL_S``."""
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), PING_INTERVAL_S)
            self._kick.clear()
            if conn.is_closed():
                raise ConnectionError("closed by the server")
            async with self._lock:
                ids, self._pending = list(self._pending), {}
                try:
                    if ids:
                        for payload in payloads(self.replica_id, ids):
                            await conn.execute(
                                "SELECT pg_notify($1, $2)", self.channel, payload, timeout=STATEMENT_TIMEOUT_S
                            )
                    else:
                        await conn.fetchval("SELECT 1", timeout=STATEMENT_TIMEOUT_S)
                except BaseException:
                    self._pending = {**dict.fromkeys(ids), **self._pending}  # sent again after the reconnect
                    raise

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        sender, _, ids = payload.partition(" ")
        if sender == self.replica_id or not ids:
            return
        agent_ids = ids.split(",")
        self.hub.wake(agent_ids)
        if self.on_wake is not None:
            self.on_wake(len(agent_ids))

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.leading = False
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), STATEMENT_TIMEOUT_S)
            except Exception:
                conn.terminate()
