"""The agent: one per process, one thread, one HTTP connection pool, whatever the number of sessions.

Session hooks only record state in memory and mark it dirty; nothing on a caller's thread touches the
network. The agent thread runs two loops on its own event loop:

- **sync**: every ``flush_delay_s`` it sends what changed (new sessions, status, ends) in one request, and
  every ``sync_interval_s`` at least a heartbeat of all its sessions. After an outage, or when the server
  does not know the agent (a new database), it sends every live session (a full sync).
- **commands**: a long-poll the server answers as soon as a kill (or a drain) is requested; the sync
  answers also carry pending kills, as the fallback path, and the process's drain.

While the server is down the agent keeps only the latest state of each live session and the ends not
yet acknowledged, logs one line per outage, and retries at most one sync interval apart.

This module holds the thread and its two loops; what they work on lives beside it: the session table
(``sessions.py``), replicas and outages (``failover.py``), the process's facts (``process.py``), exit
(``exiting.py``), the drain and readiness port (``draining.py``, ``readiness.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from session_monitor._version import __version__
from session_monitor.client import exiting, loop_monitor, sync_answer, threads
from session_monitor.client.command_poll import poll_commands
from session_monitor.client.config import ClientConfig, resolve_config
from session_monitor.client.config_cache import ConfigCache, cache_dir
from session_monitor.client.draining import DrainWatch
from session_monitor.client.exiting import on_exit
from session_monitor.client.failover import ServerUrls, server_unreachable
from session_monitor.client.limits import Limits
from session_monitor.client.process import ProcessFacts, redacted_command
from session_monitor.client.readiness import open_readiness
from session_monitor.client.sessions import (
    MAX_PENDING_ENDS,
    MAX_REMEMBERED_KILLS,
    KillHandler,
    SessionRecord,
    SessionTable,
)

if TYPE_CHECKING:
    from session_monitor.client.usage import Usage

logger = logging.getLogger(__name__)

EXIT_SYNC_TIMEOUT_S = 3.0
"""How long process exit waits for the last sync (sessions ended as ``process_exit``)."""

__all__ = [
    "EXIT_SYNC_TIMEOUT_S", "MAX_PENDING_ENDS", "MAX_REMEMBERED_KILLS", "Agent", "KillHandler", "SessionRecord",
    "current_agent", "get_agent", "on_exit", "redacted_command", "reset", "server_unreachable",
]  # fmt: skip


class Agent:
    """Batches the state of this process's sessions to the server and carries out its commands."""

    def __init__(self, config: ClientConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.agent_id = secrets.token_urlsafe(12)
        self.started_at = datetime.now(UTC)
        self.sessions = SessionTable()
        self.lock = self.sessions.lock
        """Taken by trackers while they change a record in place (then :meth:`changed`)."""
        self._urls = ServerUrls(config.server_urls)
        self._sync_interval_s = config.sync_interval_s
        self._cursor = 0
        self._transport = transport
        self._stopping = threading.Event()
        self._sync_lock = asyncio.Lock()
        """One sync at a time: the exiting one must be the last the server sees (it marks the process exited)."""
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self.repoll = asyncio.Event()
        """Set (on the agent's loop) to end the command long-poll in flight and poll again at once."""
        self._client: httpx.AsyncClient | None = None
        self._thread = threading.Thread(target=self._run, name="session-monitor-agent", daemon=True)
        self._ready = threading.Event()
        self.config_cache = ConfigCache(config.server_url, cache_dir(), wake=self._wake_now)
        """The shared config this process follows (``shared.py``)."""
        self._process = ProcessFacts(self.started_at)
        self.syncs = 0
        """Successful syncs so far (for tests and benchmarks)."""
        self.usage: Usage | None = None
        """What the sessions cost and what ended ones left running (set by the Panel integration, :meth:`use`)."""
        self.draining = DrainWatch()
        """This process's drain, from the sync answers; its readiness port answers from it (``readiness.py``)."""
        self.limits = Limits()
        """Session limits and exemptions, from the last sync answer."""
        self.sessions.exempt_rule = self.limits.exempts

    # -- any thread: record and enqueue only ------------------------------------------------------

    def track(self, record: SessionRecord, on_kill: KillHandler) -> None:
        """Start tracking a session; ``on_kill`` is called (on the agent thread) when a kill arrives."""
        self.sessions.track(record, on_kill)
        self.start()

    def changed(self, session_id: str) -> None:
        """The record of ``session_id`` was changed in place (under :attr:`lock`): send it at the next flush."""
        self.sessions.changed(session_id)

    def end(self, session_id: str, reason: str) -> None:
        """The session ended: tell the server now (the agent wakes). Unknown or already ended ids are ignored."""
        self.sessions.end(session_id, reason)
        self._wake_now()  # sent now, not at the next flush: a closed tab is listed as ended within a round trip

    def use(self, usage: Usage) -> None:
        """Send each session's cost and the process's leftovers, measured by ``usage`` (once per process)."""
        if self.usage is None:
            self.usage = usage

    def was_killed(self, session_id: str) -> bool:
        """Whether a kill for this session id has been received (a reconnect under it must be refused)."""
        return session_id in self.sessions.killed

    def remember_kill(self, session_id: str) -> None:
        self.sessions.remember_kill(session_id)

    def _begin_exit(self) -> None:
        """The process is exiting: hold changes back for the last sync, so every session's end is in that one."""
        self.sessions.begin_exit()

    @property
    def session_count(self) -> int:
        return len(self.sessions.records)

    @property
    def online(self) -> bool:
        return bool(self._urls.online)

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the agent thread (once). Also makes SIGTERM run the exit hooks, as SIGINT does."""
        if self._started:
            return
        with self.lock:
            if self._started:
                return
            self._started = True
        with threads.untracked():  # the agent serves every session, not the one whose call started it
            self._thread.start()
        exiting.install_sigterm_exit()

    def stop(self, *, exiting: bool = False, timeout_s: float = EXIT_SYNC_TIMEOUT_S) -> None:
        """Send the last changes (``exiting``: the process is going away) and stop the thread."""
        if not self._started or self._stopping.is_set():
            return
        loop = self._loop
        if loop is not None and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._final_sync(exiting), loop)
            try:
                future.result(timeout=timeout_s)
            except Exception as exc:
                logger.warning(
                    "agent %s: last sync failed (%s); the server will expire its sessions", self.agent_id, exc
                )
        self._stopping.set()
        self._wake_now()
        self._thread.join(timeout=timeout_s)

    def wait_loop(self, timeout_s: float) -> asyncio.AbstractEventLoop | None:
        """The agent's running loop (started if need be), or ``None`` if it did not start within ``timeout_s``."""
        self.start()
        return self._loop if self._ready.wait(timeout_s) and not self._stopping.is_set() else None

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def http(self) -> httpx.AsyncClient | None:
        """The agent's HTTP client (its loop only)."""
        return self._client

    def _wake_now(self) -> None:
        """Wake the agent's loop from any thread (a no-op once its loop is closed)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the last sync let the thread finish and close its loop
                loop.call_soon_threadsafe(wake.set)

    # -- agent thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:
            logger.exception("agent %s stopped on an unexpected error", self.agent_id)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        headers = {"User-Agent": f"panel-session-monitor/{__version__}"}
        if self.config.client_token:
            headers["Authorization"] = f"Bearer {self.config.client_token}"
        async with httpx.AsyncClient(
            base_url=self.server_url,
            headers=headers,
            transport=self._transport,
            timeout=httpx.Timeout(self.config.request_timeout_s),
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=2),
        ) as client:
            self._client = client
            self._ready.set()
            commands = asyncio.create_task(poll_commands(self))
            readiness = await open_readiness(self.draining)
            try:
                await self._sync_loop()
            finally:
                commands.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await commands
                if readiness is not None:
                    await readiness.close()

    async def _sync_loop(self) -> None:
        assert self._wake is not None
        last_sync = float("-inf")
        retry_at = 0.0
        backoff_s = 0.5
        while not self._stopping.is_set():
            now = time.monotonic()
            due = now - last_sync >= self._sync_interval_s
            if self.usage is not None and not self.sessions.exiting:
                await self._measure(now, due)
            stalls = (monitor := loop_monitor.current()) is not None and monitor.watchdog.pending
            pending = self.sessions.pending or self.config_cache.pending
            if (pending or due or stalls) and now >= retry_at and not self.sessions.exiting:
                try:
                    async with self._sync_lock:
                        if self._stopping.is_set():
                            break  # the last sync went out while this one waited
                        await self._sync(exiting=False)
                except Exception as exc:
                    self._urls.went_offline(exc, self.session_count)
                    if self.server_url not in self._urls.failed:
                        retry_at = 0.0  # moved to another replica: try it now
                    else:
                        retry_at = time.monotonic() + backoff_s
                        backoff_s = min(backoff_s * 2, self._sync_interval_s)
                else:
                    last_sync = time.monotonic()
                    backoff_s = 0.5
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.flush_delay_s)
            self._wake.clear()

    async def _measure(self, now: float, due: bool) -> None:
        """Refresh the sessions' cost (:meth:`Usage.refresh`); a failure is logged, never raised."""
        assert self.usage is not None
        try:
            await self.usage.refresh(self.sessions, now, due=due, interval_s=self._sync_interval_s)
        except Exception:
            logger.exception("agent %s: measuring the sessions' cost failed", self.agent_id)

    async def _sync(self, *, exiting: bool) -> None:
        assert self._client is not None
        batch = self.sessions.take_batch(exiting=exiting)
        monitor = loop_monitor.current()
        stalls = monitor.watchdog.take() if monitor is not None else None
        body = {
            "agent": self._facts(),
            "full": batch.full,
            "exiting": exiting,
            "sessions": batch.sessions,
            "ended": batch.ended,
        }
        if stalls is not None and stalls.stalls:
            body["stalls"] = stalls.stalls
        follow, sent = self.config_cache.sync_request()
        if follow is not None:
            body["config"] = follow
        url = self.server_url
        try:
            response = await self._client.post(f"/agents/{self.agent_id}/sync", json=body)
            if response.status_code >= 400:
                raise httpx.HTTPStatusError(
                    f"sync refused ({response.status_code}): {response.text[:200]}",
                    request=response.request,
                    response=response,
                )
            data = response.json()
        except BaseException as exc:
            self.sessions.batch_failed(batch)  # the server may have lost anything: send everything when it is back
            self._urls.failed.add(url)
            self.fail_over(url, exc)
            raise
        self._urls.failed.clear()
        self.sessions.batch_sent(batch, resync=bool(data.get("resync")))
        if follow is not None and self.config_cache.received(data, sent, sync=True):
            self.repoll.set()  # a new follow: the long-poll in flight waits with the old one; ask again
        self.syncs += 1
        self._urls.came_online(len(batch.sessions) if batch.full else self.session_count)
        sync_answer.apply(self, data, monitor, stalls)
        if self.sessions.full and self._wake is not None:
            self._wake.set()

    async def _final_sync(self, exiting: bool) -> None:
        async with self._sync_lock:  # after a sync in flight, not beside it
            try:
                await self._sync(exiting=exiting)
            finally:
                self._stopping.set()

    def _facts(self) -> dict[str, Any]:
        facts = self._process.wire()
        if self.usage is not None:
            facts["leftovers"] = list(self.usage.leftovers.current)
        monitor = loop_monitor.current()
        if monitor is not None:
            facts["loop"] = monitor.health()
        return facts

    @property
    def server_url(self) -> str:
        """The server this agent talks to now (one of ``config.server_urls``)."""
        return self._urls.current

    def fail_over(self, failed_url: str, exc: BaseException) -> bool:
        """After a request to ``failed_url`` failed: move both loops to the next URL if the server is unreachable.

        Returns whether the agent now talks to another URL than ``failed_url`` (one outage is one step).
        """
        if not self._urls.can_fail_over(exc):
            return False
        if self._urls.advance_from(failed_url):
            self.sessions.resync()  # whatever the old replica missed (an end, a status), the new one gets it all
            if self._client is not None:
                self._client.base_url = httpx.URL(self.server_url)
            reason = exc or type(exc).__name__
            logger.warning("agent %s: server %s unreachable (%s); moving to %s", self.agent_id, failed_url, reason,
                           self.server_url)  # fmt: skip
        return True


_agent: Agent | None = None
_agent_lock = threading.Lock()


def get_agent(config: ClientConfig | None = None) -> Agent:
    """The process's agent, created on first use (with ``config``, or the environment's)."""
    global _agent
    if _agent is None:
        with _agent_lock:
            if _agent is None:
                _agent = Agent(config or resolve_config())
    elif config is not None and config.server_url != _agent.config.server_url:
        logger.warning(
            "agent already reports to %s; ignoring server_url %s (one agent per process)",
            _agent.config.server_url,
            config.server_url,
        )
    return _agent


def current_agent() -> Agent | None:
    return _agent


def reset() -> None:
    """Stop and forget the process's agent (tests)."""
    global _agent
    with _agent_lock:
        agent, _agent = _agent, None
    if agent is not None:
        agent.stop(timeout_s=1.0)


def _hold_changes_at_exit() -> None:
    if _agent is not None:
        _agent._begin_exit()


def _last_sync_at_exit() -> None:
    if _agent is not None:
        _agent.stop(exiting=True)


exiting.around_exit_hooks(_hold_changes_at_exit, _last_sync_at_exit)
exiting.register_at_exit()
