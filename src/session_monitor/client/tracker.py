"""``SessionClient``: the prototype's per-session tracker API, backed by the process's one agent.

Every method records state in memory and returns; nothing here waits on the
network, whatever the server does.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import uuid
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

from session_monitor.client import threads
from session_monitor.client.agent import Agent, SessionRecord, get_agent, on_exit
from session_monitor.client.callbacks import KillCallback, run_callbacks, run_in_background
from session_monitor.client.config import resolve_config
from session_monitor.client.task_block import TaskBlock
from session_monitor.errors import ConfigError
from session_monitor.protocol import MAX_APP_NAME, MAX_TASK, MAX_USER_ID, STATUS_PATTERN

logger = logging.getLogger(__name__)

_STATUS_RE = re.compile(STATUS_PATTERN)


def _text(value: str | None, limit: int) -> str | None:
    """Client-provided text made acceptable to the server: printable, cut to ``limit`` characters."""
    if value is None:
        return None
    value = str(value)
    if not value.isprintable():
        value = "".join(ch if ch.isprintable() else " " for ch in value)
    return value[:limit]


class SessionBinding(Protocol):
    """What a tracker needs from the integration that runs its session (``client/panel.py``'s ``PanelBinding``).

    The integration calls the tracker back through its public methods only: :meth:`SessionClient.activate`,
    :meth:`~SessionClient.finish`, :meth:`~SessionClient.request_kill`, :meth:`~SessionClient.report_browser`,
    :meth:`~SessionClient.report_disconnected` and :meth:`~SessionClient.take_callbacks`.
    """

    def start(self) -> None:
        """The tracker holds the binding now: refuse a killed or expired id coming back, else watch the session."""

    def schedule_kill(self, reason: str | None) -> bool:
        """End the session as ``killed`` on its own loop; ``False`` if it has no loop any more."""

    def release(self) -> None:
        """The tracker ended: the integration forgets it."""


class SessionClient:
    """Tracks one session: what it is doing, and what to run when it is killed or ends.

    Obtain it with :meth:`get_tracker`; one tracker per Panel session (or, outside Panel,
    per app name in the process).
    """

    _registry: dict[str, SessionClient] = {}
    _lock = threading.Lock()

    @classmethod
    def get_tracker(
        cls,
        app_name: str,
        user_id: str | None = None,
        server_url: str | None = None,
        heartbeat_interval: float | None = None,
        *,
        idle_timeout_s: float | None = None,
        max_session_age_s: float | None = None,
    ) -> SessionClient:
        """The tracker of the current session, created on first call.

        Works from the session's own callbacks, from threads and executor jobs they start,
        and outside Panel (scripts, tests: one tracker per ``app_name`` until stopped).

        Args:
            app_name: Name shown for the session's app (1–200 characters).
            user_id: Optional user name (at most 200 characters).
            server_url: The monitor server (default ``SESSION_MONITOR_URL`` or ``http://127.0.0.1:8000``);
                the first tracker of a process sets it for the process's agent.
            heartbeat_interval: Accepted for compatibility; the agent syncs every few seconds whatever
                its value (it was the prototype's per-session polling period).
            idle_timeout_s: End the session as ``expired`` after this many seconds without user interaction
                and without a running task (0: never). Default: ``SESSION_MONITOR_IDLE_TIMEOUT_S`` for this
                app, else off.
            max_session_age_s: End the session as ``expired`` once it is this old (0: never). Default:
                ``SESSION_MONITOR_MAX_SESSION_AGE_S`` for this app, else off.

        A Panel session reaches the server only once its first websocket connected: with ``--num-procs``
        the copy of a session that never gets a browser is never shown.
        """
        if not isinstance(app_name, str) or not app_name.strip() or len(app_name) > MAX_APP_NAME:
            raise ConfigError(f"app_name must be 1 to {MAX_APP_NAME} characters, got {app_name!r}")
        if not app_name.isprintable():
            raise ConfigError(f"app_name must not contain control characters: {app_name!r}")
        if "panel" in sys.modules:
            from session_monitor.client import panel as _  # noqa: F401  (registers Panel's session finder)
        key = threads.current_key()
        panel_session = key is not None
        if key is None:
            key = f"local:{app_name}"
        with cls._lock:
            tracker = cls._registry.get(key)
            if tracker is not None and not tracker._ended:
                if tracker._auto:  # made by the setup script: the app's own names win
                    tracker._adopt(app_name, user_id, idle_timeout_s, max_session_age_s)
                return tracker
            agent = get_agent(resolve_config(server_url) if server_url else None)
            session_id = key if panel_session else str(uuid.uuid4())
            tracker = cls(app_name, _text(user_id, MAX_USER_ID), agent=agent, session_id=session_id, key=key)
            tracker.idle_timeout_s, tracker.max_session_age_s = idle_timeout_s, max_session_age_s
            cls._registry[key] = tracker
        if panel_session:
            from session_monitor.client import panel as panel_hooks

            tracker._attach(panel_hooks.bind(tracker))
        if tracker._binding is None:
            tracker.activate()  # outside Panel there is no websocket to wait for
        return tracker

    def __init__(self, app_name: str, user_id: str | None, *, agent: Agent, session_id: str, key: str) -> None:
        self.app_name = app_name
        self.user_id = user_id
        self.session_id = session_id
        self._key = key
        self._agent = agent
        self._record = SessionRecord(session_id, app_name, user_id, started_at=datetime.now(UTC))
        self._callbacks: list[KillCallback] = []
        self._stack: list[tuple[object, str, str | None, datetime | None]] = []
        self._ended = False
        self._killed = False
        self.kill_reason: str | None = None
        self._binding: SessionBinding | None = None
        self._active = False
        self._auto = False
        self._end_reason: str | None = None
        self.idle_timeout_s: float | None = None
        """Explicit idle timeout of this session (seconds, 0 off); ``None``: the process's configuration."""
        self.max_session_age_s: float | None = None
        """Explicit maximum age of this session (seconds, 0 off); ``None``: the process's configuration."""

    def __repr__(self) -> str:
        return f"<SessionClient {self.session_id} app={self.app_name!r} status={self._record.status!r}>"

    def _adopt(
        self, app_name: str, user_id: str | None, idle_timeout_s: float | None, max_session_age_s: float | None
    ) -> None:
        """The app asked for the tracker the setup script made: take the app's names and settings."""
        with self._agent.lock:
            self._auto = False
            self.app_name = self._record.app_name = app_name
            if user_id is not None:
                self.user_id = self._record.user_id = _text(user_id, MAX_USER_ID)
            if idle_timeout_s is not None:
                self.idle_timeout_s = idle_timeout_s
            if max_session_age_s is not None:
                self.max_session_age_s = max_session_age_s
            self._agent.changed(self.session_id)

    def _attach(self, binding: SessionBinding | None) -> None:
        """Hold the integration's binding (``None``: no Panel document for this session), then start it."""
        if binding is not None:
            self._binding = binding
            binding.start()

    def activate(self) -> None:
        """Register the session with the agent (once): for a Panel session, when its first websocket connected.

        Called by the Panel integration; a tracker outside Panel is active from the start.
        """
        with self._agent.lock:
            if self._active or self._closing:
                return
            self._active = True
        self._agent.track(self._record, self.request_kill)
        with self._agent.lock:
            ended, reason = self._ended, self._end_reason
        if ended:  # ended while being registered: make sure the server hears the end too
            self._agent.end(self.session_id, reason or "closed")

    # -- status -----------------------------------------------------------------------------------

    def task(self, name: str) -> TaskBlock:
        """Mark the session ``running`` with task ``name`` inside a ``with`` (or ``async with``) block."""
        return TaskBlock(self, str(name))

    def set_status(self, status: str, task: str | None = None) -> None:
        """Set the status (``idle``, ``running`` or another short lower-case word) and the current task."""
        if not isinstance(status, str) or len(status) > 32 or not _STATUS_RE.fullmatch(status):
            raise ConfigError(f"status must be a lower-case word of at most 32 characters, got {status!r}")
        agent, record = self._agent, self._record
        with agent.lock:
            if status == "running" and (record.status != "running" or record.current_task != task):
                record.task_started_at = datetime.now(UTC)
            elif status != "running":
                record.task_started_at = None
            record.status = status
            record.current_task = _text(task, MAX_TASK)
            agent.changed(record.session_id)

    @property
    def status(self) -> str:
        return self._record.status

    @property
    def current_task(self) -> str | None:
        return self._record.current_task

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def started_at(self) -> datetime:
        return self._record.started_at

    @property
    def last_interaction_at(self) -> datetime | None:
        """When the page last reported a user interaction (``None``: never, or no page)."""
        return self._record.last_interaction_at

    def _push_task(self, name: str, token: object) -> None:
        agent, record = self._agent, self._record
        with agent.lock:
            self._stack.append((token, record.status, record.current_task, record.task_started_at))
            record.status = "running"
            record.current_task = name if len(name) <= MAX_TASK and name.isprintable() else _text(name, MAX_TASK)
            record.task_started_at = datetime.now(UTC)
            agent.changed(record.session_id)

    def _pop_task(self, token: object) -> None:
        agent, record = self._agent, self._record
        with agent.lock:
            stack = self._stack
            index = next((i for i in range(len(stack) - 1, -1, -1) if stack[i][0] is token), None)
            if index is None:
                record.status, record.current_task, record.task_started_at = "idle", None, None
            elif index == len(stack) - 1:
                _, record.status, record.current_task, record.task_started_at = stack.pop()
            else:
                # Ended while a task started after it (on another thread or coroutine) still runs: that one
                # stays shown, and restores what was there before this one when it ends.
                stack[index + 1] = (stack[index + 1][0], *stack[index][1:])
                del stack[index]
            agent.changed(record.session_id)

    # -- policies ---------------------------------------------------------------------------------

    def exempt(self, exempt: bool = True) -> None:
        """Idle culling and maximum age never end this session (a kiosk display, a long unattended run).

        Kills, a lost browser and process exit still end it. Shown as a flag on the session's row.
        """
        with self._agent.lock:
            self._record.exempt = bool(exempt)
            self._agent.changed(self.session_id)

    @property
    def is_exempt(self) -> bool:
        """Marked exempt by the app (:meth:`exempt`), or exempt by policy (its app or user, ``PUT /policies``)."""
        return self._record.exempt or self._agent.limits.exempts(self.app_name, self.user_id)

    def refusal(self) -> str | None:
        """Why this session would go over a session limit if it started now (the text for the user), else None.

        Decided from this process's registered sessions and the other processes' counts in the last sync
        answer: never waits on the network.
        """
        agent = self._agent
        with agent.lock:
            live = [r for sid, r in agent.sessions.records.items() if sid != self.session_id]
        return agent.limits.check(live, self.app_name, self.user_id)

    # -- ending -----------------------------------------------------------------------------------

    def on_kill(self, callback: KillCallback) -> None:
        """Run ``callback`` (sync or async, no arguments) once when the session is killed or ends.

        Registered after the session ended, it runs at once.
        """
        if not callable(callback):
            raise ConfigError(f"on_kill needs a callable, got {callback!r}")
        with self._agent.lock:
            if not self._ended:
                self._callbacks.append(callback)
                return
        run_callbacks(self.session_id, [callback])

    def stop(self) -> None:
        """End the session (``closed``): its ``on_kill`` callbacks run, then the server is told."""
        self.finish("closed")

    def take_callbacks(self) -> list[KillCallback]:
        """The callbacks not run yet, handed over exactly once."""
        with self._agent.lock:
            callbacks, self._callbacks = self._callbacks, []
        return callbacks

    @property
    def _closing(self) -> bool:
        """Ended, or a kill is on its way: nothing may start or end it any more (a kill wins, see :meth:`finish`)."""
        return self._ended or self._killed

    def finish(self, reason: str, *, run: bool = True) -> None:
        """End once with ``reason``: callbacks (``run``, unless already taken), the server told, the tracker forgotten.

        The one place of the rule *a kill wins*: a session a kill was requested for ends as ``killed``, whatever
        reason ends it afterwards (Panel's destroy hook, a lost browser, process exit). Called by the
        integration (``closed``, ``browser_lost``, ``expired``, ``killed``) and at process exit.
        """
        with self._agent.lock:
            if self._ended:
                return
            self._ended = True
            self._end_reason = "killed" if self._killed else reason
        if run:
            run_callbacks(self.session_id, self.take_callbacks())
        self._agent.end(self.session_id, self._end_reason)  # a session never registered is not sent
        with SessionClient._lock:
            if SessionClient._registry.get(self._key) is self:
                del SessionClient._registry[self._key]
        binding, self._binding = self._binding, None
        if binding is not None:
            binding.release()

    def request_kill(self, reason: str | None) -> None:
        """Kill the session (once): on its own loop through the binding, else on the callback thread.

        Called by the agent (on its thread) when a kill command arrives, and by the integration for a killed
        id that reconnects. Never blocks.
        """
        with self._agent.lock:
            if self._closing:
                return
            self._killed = True
        self.kill_reason = reason
        logger.info("session %s killed (%s)", self.session_id, reason or "no reason given")
        binding = self._binding
        if binding is not None and binding.schedule_kill(reason):
            return
        run_in_background(partial(self.finish, "killed"))

    # -- browser state (reported by the integration, on the session's loop) -----------------------

    def report_browser(self, visibility: str | None, interacted: bool) -> None:
        """The page's visibility (``visible``/``hidden``/``None``), and whether the user interacted just now."""
        agent, record = self._agent, self._record
        with agent.lock:
            record.visibility = visibility
            if interacted:
                record.last_interaction_at = datetime.now(UTC)
            agent.changed(self.session_id)

    def report_disconnected(self, disconnected: bool) -> None:
        """The session lost its last websocket (``True``), or got one back (``False``)."""
        agent, record = self._agent, self._record
        with agent.lock:
            record.disconnected_at = datetime.now(UTC) if disconnected else None
            agent.changed(self.session_id)

    # -- registry ---------------------------------------------------------------------------------

    @classmethod
    def active(cls) -> list[SessionClient]:
        """The live trackers of this process."""
        with cls._lock:
            return list(cls._registry.values())

    @classmethod
    def for_session(cls, key: str) -> SessionClient | None:
        with cls._lock:
            return cls._registry.get(key)

    @classmethod
    def reset(cls) -> None:
        """Forget every tracker without ending them (tests)."""
        with cls._lock:
            cls._registry.clear()


def _finish_all_at_exit() -> None:
    """Process exit: every live session's callbacks run, then all are ended as ``process_exit`` in one request."""
    for tracker in SessionClient.active():
        tracker.finish("process_exit")


on_exit(_finish_all_at_exit)
threads.install()
