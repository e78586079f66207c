"""The agent: one per process, one thread, one HTTP connection pool, whatever the number of sessions.

Session hooks only record state in memory and mark it dirty; nothing on a
caller's thread touches the network. The agent thread runs two loops on its
own event loop:

- **sync**: every ``flush_delay_s`` it sends what changed (new sessions, status,
  ends) in one request, and every ``sync_interval_s`` at least a heartbeat of
  all its sessions. After an outage, or when the server does not know the
  agent (a new database), it sends every live session (a full sync).
- **commands**: a long-poll the server answers as soon as a kill is requested;
  the sync answers also carry pending kills, as the fallback path.

While the server is down the agent keeps only the latest state of each live
session and the ends not yet acknowledged, logs one line per outage, and
retries at most one sync interval apart.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import platform
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil

from session_monitor._version import __version__
from session_monitor.client import threads
from session_monitor.client.config import ClientConfig
from session_monitor.protocol import KILL

logger = logging.getLogger(__name__)

KillHandler = Callable[[str | None], None]
"""Called on the agent thread with the kill reason; must only schedule work, never block."""

MAX_REMEMBERED_KILLS = 10_000
"""Killed session ids remembered to refuse their reconnection."""

MAX_PENDING_ENDS = 10_000
"""Ends kept while the server is unreachable; the oldest are dropped beyond this."""

EXIT_SYNC_TIMEOUT_S = 3.0
"""How long process exit waits for the last sync (sessions ended as ``process_exit``)."""

_SECRET_ARG = re.compile(r"(?i)(secret|token|password|passwd|key|cookie)")
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^/\s@]*@")
"""The password of a ``scheme://user:password@host`` URL, wherever it appears (``--db postgresql://…``)."""


@dataclass(slots=True)
class SessionRecord:
    """The latest known state of one live session; changed under the agent's lock."""

    session_id: str
    app_name: str
    user_id: str | None
    started_at: datetime
    status: str = "idle"
    current_task: str | None = None
    task_started_at: datetime | None = None
    visibility: str | None = None
    last_interaction_at: datetime | None = None
    disconnected_at: datetime | None = None

    def wire(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "app_name": self.app_name,
            "user_id": self.user_id,
            "status": self.status,
            "current_task": self.current_task,
            "task_started_at": _iso(self.task_started_at),
            "started_at": _iso(self.started_at),
            "visibility": self.visibility,
            "last_interaction_at": _iso(self.last_interaction_at),
            "disconnected_at": _iso(self.disconnected_at),
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def redacted_command(argv: list[str], limit: int = 1000) -> str:
    """The process's command line with the values of secret-looking options hidden."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        name, sep, _ = arg.partition("=")
        if name.startswith("-") and _SECRET_ARG.search(name):
            if sep:
                out.append(f"{name}=***")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(arg)
    text = _URL_PASSWORD.sub(r"\1***@", " ".join(out))
    return "".join(ch if ch.isprintable() else "?" for ch in text)[:limit]


class Agent:
    """Batches the state of this process's sessions to the server and carries out its commands."""

    def __init__(self, config: ClientConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.config = config
        self.agent_id = secrets.token_urlsafe(12)
        self.started_at = datetime.now(UTC)
        self.lock = threading.Lock()
        self._records: dict[str, SessionRecord] = {}
        self._handlers: dict[str, KillHandler] = {}
        self._dirty: set[str] = set()
        self._ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._killed: OrderedDict[str, None] = OrderedDict()
        self._full = True
        self._online: bool | None = None
        self._offline_since = 0.0
        self._url_index = 0
        self._failed_urls: set[str] = set()
        """Server URLs that failed since the last successful sync (failover tries each once, then backs off)."""
        self._sync_interval_s = config.sync_interval_s
        self._cursor = 0
        self._transport = transport
        self._stopping = threading.Event()
        self._sync_lock = asyncio.Lock()
        """One sync at a time: the exiting one must be the last the server sees (it marks the process exited)."""
        self._exiting = False
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._client: httpx.AsyncClient | None = None
        self._thread = threading.Thread(target=self._run, name="session-monitor-agent", daemon=True)
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # start the measurement window
        self._host = socket.gethostname()
        self._command = redacted_command(self._process.cmdline() or sys.argv)
        self.syncs = 0
        """Successful syncs so far (for tests and benchmarks)."""

    # -- any thread: record and enqueue only ------------------------------------------------------

    def track(self, record: SessionRecord, on_kill: KillHandler) -> None:
        """Start tracking a session; ``on_kill`` is called (on the agent thread) when a kill arrives."""
        with self.lock:
            self._records[record.session_id] = record
            self._handlers[record.session_id] = on_kill
            self._dirty.add(record.session_id)
            self._ended.pop(record.session_id, None)
        self.start()

    def changed(self, session_id: str) -> None:
        """The record of ``session_id`` was changed in place (under :attr:`lock`): send it at the next flush."""
        self._dirty.add(session_id)

    def end(self, session_id: str, reason: str) -> None:
        """The session ended: tell the server now (the agent wakes). Unknown or already ended ids are ignored."""
        with self.lock:
            record = self._records.pop(session_id, None)
            self._handlers.pop(session_id, None)
            self._dirty.discard(session_id)
            if record is None:
                return
            self._ended[session_id] = {
                "session_id": session_id,
                "reason": reason,
                "ended_at": datetime.now(UTC).isoformat(),
            }
            while len(self._ended) > MAX_PENDING_ENDS:
                self._ended.popitem(last=False)
        # Sent now, not at the next flush: a closed tab is listed as ended within a round trip.
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the last sync has taken it
                loop.call_soon_threadsafe(wake.set)

    def was_killed(self, session_id: str) -> bool:
        """Whether a kill for this session id has been received (a reconnect under it must be refused)."""
        return session_id in self._killed

    def remember_kill(self, session_id: str) -> None:
        with self.lock:
            self._killed[session_id] = None
            while len(self._killed) > MAX_REMEMBERED_KILLS:
                self._killed.popitem(last=False)

    def _begin_exit(self) -> None:
        """The process is exiting: hold changes back for the last sync, so every session's end is in that one."""
        with self.lock:
            self._exiting = True

    @property
    def session_count(self) -> int:
        return len(self._records)

    @property
    def online(self) -> bool:
        return bool(self._online)

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
        _install_sigterm_exit()

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
        if loop is not None and self._wake is not None:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the last sync let the thread finish and close its loop already
                pass
        self._thread.join(timeout=timeout_s)

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
            commands = asyncio.create_task(self._command_loop())
            try:
                await self._sync_loop()
            finally:
                commands.cancel()
                try:
                    await commands
                except asyncio.CancelledError:
                    pass

    async def _sync_loop(self) -> None:
        assert self._wake is not None
        last_sync = float("-inf")
        retry_at = 0.0
        backoff_s = 0.5
        while not self._stopping.is_set():
            now = time.monotonic()
            pending = self._full or bool(self._dirty) or bool(self._ended)
            due = now - last_sync >= self._sync_interval_s
            if (pending or due) and now >= retry_at and not self._exiting:
                try:
                    async with self._sync_lock:
                        if self._stopping.is_set():
                            break  # the last sync went out while this one waited
                        await self._sync(exiting=False)
                except Exception as exc:
                    self._went_offline(exc)
                    if self.server_url not in self._failed_urls:
                        retry_at = 0.0  # moved to another replica: try it now
                    else:
                        retry_at = time.monotonic() + backoff_s
                        backoff_s = min(backoff_s * 2, self._sync_interval_s)
                else:
                    last_sync = time.monotonic()
                    backoff_s = 0.5
            try:
                await asyncio.wait_for(self._wake.wait(), self.config.flush_delay_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _sync(self, *, exiting: bool) -> None:
        assert self._client is not None
        with self.lock:
            full = self._full
            ids = list(self._records) if full else [sid for sid in self._dirty if sid in self._records]
            sessions = [self._records[sid].wire() for sid in ids]
            sent_dirty = set(self._dirty)
            self._dirty.clear()
            ended = list(self._ended.values()) if exiting or not self._exiting else []
        body = {
            "agent": self._facts(),
            "full": full,
            "exiting": exiting,
            "sessions": sessions,
            "ended": ended,
        }
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
            with self.lock:
                self._dirty |= {sid for sid in sent_dirty if sid in self._records}
                self._full = True  # the server may have lost anything: send everything when it is back
            self._failed_urls.add(url)
            self._fail_over(url, exc)
            raise
        self._failed_urls.clear()
        with self.lock:
            for end in ended:
                if self._ended.get(end["session_id"]) is end:
                    del self._ended[end["session_id"]]
            self._full = bool(data.get("resync"))
        self.syncs += 1
        self._came_online(len(sessions) if full else None)
        interval = data.get("sync_interval_s")
        if isinstance(interval, int | float) and interval > 0 and not self.config.sync_interval_from_env:
            self._sync_interval_s = float(interval)
        for command in data.get("commands", ()):
            self._dispatch(command)
        if self._full and self._wake is not None:
            self._wake.set()

    async def _command_loop(self) -> None:
        assert self._client is not None
        wait_s = self.config.long_poll_s
        while not self._stopping.is_set():
            url = self.server_url
            try:
                response = await self._client.get(
                    f"/agents/{self.agent_id}/commands",
                    params={"after": self._cursor, "wait": wait_s},
                    timeout=wait_s + self.config.request_timeout_s,
                )
                response.raise_for_status()
                data = response.json()
                cursor = int(data.get("cursor", self._cursor))
                found = list(data.get("commands", ()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.debug("agent %s: command poll failed: %s", self.agent_id, exc)
                moved = self._fail_over(url, exc)
                await asyncio.sleep(0.05 if moved else min(2.0, self._sync_interval_s))
                continue
            self._cursor = cursor
            for command in found:
                self._dispatch(command)

    def _dispatch(self, command: Any) -> None:
        if not isinstance(command, dict):
            logger.warning("agent %s: malformed command %r ignored", self.agent_id, command)
            return
        kind, session_id = command.get("kind"), command.get("session_id")
        if kind != KILL:
            logger.warning("agent %s: unknown command kind %r ignored", self.agent_id, kind)
            return
        if not isinstance(session_id, str):
            return
        self.remember_kill(session_id)
        handler = self._handlers.get(session_id)
        if handler is None:
            return  # not ours any more (ended, or a copy in another process)
        try:
            handler(command.get("reason"))
        except Exception:
            logger.exception("session %s: kill handler failed", session_id)

    async def _final_sync(self, exiting: bool) -> None:
        async with self._sync_lock:  # after a sync in flight, not beside it
            try:
                await self._sync(exiting=exiting)
            finally:
                self._stopping.set()

    def _facts(self) -> dict[str, Any]:
        try:
            cpu: float | None = self._process.cpu_percent(None)
            rss: int | None = int(self._process.memory_info().rss)
        except psutil.Error:
            cpu = rss = None
        versions = {"python": platform.python_version(), "session_monitor": __version__}
        for module in ("panel", "bokeh", "tornado"):
            loaded = sys.modules.get(module)
            version = getattr(loaded, "__version__", None) or getattr(loaded, "version", None)
            if isinstance(version, str):
                versions[module] = version[:64]
        return {
            "host": self._host,
            "pid": os.getpid(),
            "command": self._command,
            "versions": versions,
            "cpu_percent": cpu,
            "rss_bytes": rss,
            "started_at": self.started_at.isoformat(),
        }

    @property
    def server_url(self) -> str:
        """The server this agent talks to now (one of ``config.server_urls``)."""
        return self.config.server_urls[self._url_index]

    def _fail_over(self, failed_url: str, exc: BaseException) -> bool:
        """After a request to ``failed_url`` failed: move both loops to the next URL if the server is unreachable.

        Returns whether the agent now talks to another URL than ``failed_url``. Only the loop that sees the
        failure first moves (the other finds the URL already changed), so one outage is one step.
        """
        urls = self.config.server_urls
        if len(urls) < 2 or not server_unreachable(exc):
            return False
        if self.server_url == failed_url:
            self._url_index = (self._url_index + 1) % len(urls)
            with self.lock:
                self._full = True  # whatever the old replica missed (an end, a status), the new one gets it all
            if self._client is not None:
                self._client.base_url = httpx.URL(self.server_url)
            logger.warning(
                "agent %s: server %s unreachable (%s); moving to %s",
                self.agent_id,
                failed_url,
                exc or type(exc).__name__,
                self.server_url,
            )
        return True

    def _went_offline(self, exc: BaseException) -> None:
        if self._online is not False:
            self._offline_since = time.monotonic()
            logger.warning(
                "session monitor at %s unreachable (%s); tracking %d sessions offline, retrying",
                self.server_url,
                exc or type(exc).__name__,
                len(self._records),
            )
        self._online = False

    def _came_online(self, registered: int | None) -> None:
        if self._online is False:
            logger.info(
                "session monitor at %s reachable again after %.0f s; %s sessions re-registered",
                self.server_url,
                time.monotonic() - self._offline_since,
                registered if registered is not None else len(self._records),
            )
        self._online = True


def server_unreachable(exc: BaseException) -> bool:
    """Whether a failed request means its server (or the way to it) is down, so another replica may serve."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (502, 503, 504)


_agent: Agent | None = None
_agent_lock = threading.Lock()
_exit_hooks: list[Callable[[], None]] = []


def get_agent(config: ClientConfig | None = None) -> Agent:
    """The process's agent, created on first use (with ``config``, or the environment's)."""
    global _agent
    if _agent is None:
        with _agent_lock:
            if _agent is None:
                from session_monitor.client.config import resolve_config

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


def on_exit(hook: Callable[[], None]) -> None:
    """Run ``hook`` at process exit, before the agent's last sync."""
    _exit_hooks.append(hook)


def reset() -> None:
    """Stop and forget the process's agent (tests)."""
    global _agent
    with _agent_lock:
        agent, _agent = _agent, None
    if agent is not None:
        agent.stop(timeout_s=1.0)


def _at_exit() -> None:
    if _agent is not None:
        _agent._begin_exit()
    for hook in list(_exit_hooks):
        try:
            hook()
        except Exception:
            logger.exception("session monitor exit hook failed")
    if _agent is not None:
        _agent.stop(exiting=True)


def _register_at_exit() -> None:
    """Run :func:`_at_exit` at interpreter exit, before ``concurrent.futures`` shuts its thread pools down.

    The last sync may need a new connection, and asyncio resolves a host name on the loop's thread pool:
    from a plain ``atexit`` hook (run after the pools are shut down) that fails with "cannot schedule new
    futures after shutdown", and the sessions are left to expire instead of ending as ``process_exit``.
    ``threading._register_atexit`` hooks run in reverse order, so ours, registered later, runs first.
    """
    import concurrent.futures.thread  # noqa: F401  (registers the pools' own exit hook before ours)

    register = getattr(threading, "_register_atexit", None)
    if register is None:
        atexit.register(_at_exit)
    else:
        register(_at_exit)


_register_at_exit()


def _install_sigterm_exit() -> None:
    """Make SIGTERM exit through ``sys.exit`` so the exit hooks run (its default kills without them)."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no signals here
        pass


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)
