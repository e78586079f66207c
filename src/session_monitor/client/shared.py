"""Shared app configuration for Panel apps: ``cfg = session_monitor.shared_config("reports")``.

Values are JSON documents (at most 256 KiB each), versioned per key by the monitor server and pushed to every
process that follows the app. ``get`` reads this process's copy (never the network); ``set`` and ``update``
write through the server with compare-and-set, so processes never lose each other's writes; ``watch`` calls
back on the session's own IOLoop when a key changes, whoever changed it. The copy is kept on disk too: a
process started while the monitor is down begins with the last values seen. A write while the server cannot
be reached raises :class:`~session_monitor.errors.ServerUnavailable`: it is never queued to apply later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import re
import threading
import time
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from session_monitor.client import config_watch
from session_monitor.client.agent import Agent, get_agent
from session_monitor.client.config_cache import Watcher
from session_monitor.client.config_writes import send_write
from session_monitor.errors import ConfigConflict, ConfigError, ServerUnavailable
from session_monitor.protocol.config import CONFIG_KEY_PATTERN, MAX_CONFIG_KEY, MAX_CONFIG_VALUE_BYTES
from session_monitor.text import printable

T = TypeVar("T")

_KEY_RE = re.compile(CONFIG_KEY_PATTERN)


class BlockingCallWarning(RuntimeWarning):
    """A blocking shared-config call (``set``, ``update``, ``delete``) ran on a thread running an event loop."""


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_CONFIG_KEY or not _KEY_RE.match(key):
        raise ConfigError(f"config key {key!r}: 1-{MAX_CONFIG_KEY} letters, digits or _ . : -")
    return key


def encode(value: Any) -> str:
    """``value`` as compact JSON text; :class:`ConfigError` if it is not JSON or is over 256 KiB."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config values must be JSON: {exc}") from None
    size = len(text.encode())
    if size > MAX_CONFIG_VALUE_BYTES:
        raise ConfigError(f"config value of {size} bytes (compact JSON) is over the {MAX_CONFIG_VALUE_BYTES} limit")
    return text


class SharedConfig:
    """The shared config of one app (see the module docstring). Get one with :func:`shared_config`."""

    def __init__(self, app: str, agent: Agent) -> None:
        self.app = app
        self._agent = agent
        self._cache = agent.config_cache
        self._cache.follow(app)
        agent.start()

    def __repr__(self) -> str:
        return f"SharedConfig({self.app!r})"

    # -- reads: this process's copy --------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The key's value (a fresh copy), or ``default`` when absent. Never waits on the network."""
        entry = self._cache.entry(self.app, key)
        if entry is None:
            return default
        return json.loads(entry.text) if isinstance(entry.value, dict | list) else entry.value

    def version(self, key: str) -> int:
        """The key's version in this process's copy (0: absent)."""
        entry = self._cache.entry(self.app, key)
        return 0 if entry is None else entry.version

    def keys(self) -> list[str]:
        return self._cache.keys(self.app)

    def items(self) -> dict[str, Any]:
        return {key: self.get(key) for key in self.keys()}

    @property
    def loaded(self) -> bool:
        """Whether the values came from the server at least once (else from the copy on disk, or none yet)."""
        return self.app in self._cache.loaded

    def wait_loaded(self, timeout_s: float = 5.0) -> bool:
        """Wait (on this thread; never on an event loop) until the server's values arrived; returns whether."""
        deadline = time.monotonic() + timeout_s
        while not self.loaded and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.loaded

    # -- writes: through the server --------------------------------------------------------------

    async def aset(self, key: str, value: Any, *, expected_version: int | None = None) -> int:
        """Write ``value`` as the key's next version; returns it. With ``expected_version``, only if the stored
        version is that one (0: the key must not exist), else :class:`ConfigConflict` with the current one."""
        text = encode(value)
        return await self._run(send_write(self._agent, self.app, _check_key(key), text, expected_version))

    def set(self, key: str, value: Any, *, expected_version: int | None = None) -> int:
        """Blocking :meth:`aset` (warns on an event loop's thread: ``await cfg.aset(...)`` there)."""
        text = encode(value)
        return self._block(send_write(self._agent, self.app, _check_key(key), text, expected_version))

    async def adelete(self, key: str, *, expected_version: int | None = None) -> int:
        """Delete the key (a new version; the history keeps the old ones); returns that version."""
        return await self._run(send_write(self._agent, self.app, _check_key(key), None, expected_version))

    def delete(self, key: str, *, expected_version: int | None = None) -> int:
        return self._block(send_write(self._agent, self.app, _check_key(key), None, expected_version))

    async def aupdate(self, key: str, fn: Callable[[Any], Any], *, default: Any = None) -> Any:
        """Read-modify-write: store ``fn(current value or default)``, retried from the newer value after each
        conflict until it applies; returns the value stored. ``fn`` may run several times: keep it pure."""
        value, version = self._current(key, default)
        for attempt in range(1_000_000):
            text = encode(fn(value))
            try:
                await self._run(send_write(self._agent, self.app, _check_key(key), text, version))
                return json.loads(text)
            except ConfigConflict as exc:
                value, version = _from_conflict(exc, default)
                await asyncio.sleep(_backoff_s(attempt))
                value, version = self._fresher(key, value, version)
        raise AssertionError("unreachable")  # pragma: no cover

    def update(self, key: str, fn: Callable[[Any], Any], *, default: Any = None) -> Any:
        """Blocking :meth:`aupdate`."""
        _warn_if_on_loop("update")
        value, version = self._current(key, default)
        for attempt in range(1_000_000):
            text = encode(fn(value))
            try:
                self._block(send_write(self._agent, self.app, _check_key(key), text, version), warn=False)
                return json.loads(text)
            except ConfigConflict as exc:
                value, version = _from_conflict(exc, default)
                time.sleep(_backoff_s(attempt))
                value, version = self._fresher(key, value, version)
        raise AssertionError("unreachable")  # pragma: no cover

    def _fresher(self, key: str, value: Any, version: int) -> tuple[Any, int]:
        """After a pause the conflict's value may be stale: take the pushed one if the cache has a newer version
        (otherwise a writer that backs off could keep losing to writers that do not)."""
        entry = self._cache.entry(self.app, key)
        if entry is None or entry.version <= version:
            return value, version
        return self.get(key), entry.version

    def _current(self, key: str, default: Any) -> tuple[Any, int]:
        entry = self._cache.entry(self.app, key)
        if entry is None:
            return default, self.version(key)
        return self.get(key), entry.version

    # -- watch ------------------------------------------------------------------------------------

    def watch(self, key: str, callback: Callable[[Any, int], Any]) -> Callable[[], None]:
        """Call ``callback(value, version)`` on each change of ``key`` by any process (``None`` once deleted).

        Inside a Panel session it runs on that session's IOLoop (its document current) and is forgotten when
        the session ends. Returns a function that stops watching.
        """
        _check_key(key)
        schedule, on_end = config_watch.current_scheduler()
        unwatch = self._cache.add_watcher(self.app, key, Watcher(callback, schedule))
        if on_end is not None:
            on_end(unwatch)
        return unwatch

    # -- running on the agent's loop ---------------------------------------------------------------

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        loop = self._agent.wait_loop(self._agent.config.request_timeout_s)
        if loop is None:
            coro.close()
            raise ServerUnavailable("the session monitor's agent is not running: nothing was written")
        if threading.current_thread() is self._agent.thread:
            coro.close()
            raise RuntimeError("shared config writes cannot block the agent's own thread: use a watcher-free path")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    async def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(self._submit(coro))

    def _block(self, coro: Coroutine[Any, Any, T], *, warn: bool = True) -> T:
        if warn:
            _warn_if_on_loop("set")
        future = self._submit(coro)
        timeout = self._agent.config.request_timeout_s * (len(self._agent.config.server_urls) + 1) + 1
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise ServerUnavailable(
                "the session monitor did not answer in time: the write may not have applied"
            ) from None


def _from_conflict(exc: ConfigConflict, default: Any) -> tuple[Any, int]:
    value = default if exc.current_version == 0 or exc.current_value is None else exc.current_value
    return value, exc.current_version


def _backoff_s(attempt: int) -> float:
    """After a lost compare-and-set: a random pause that grows with the losses (up to 50 ms), so writers that
    collided do not collide again in lockstep and the server is not flooded with attempts bound to lose."""
    return random.uniform(0, 0.004 * 2 ** min(attempt, 3.6))  # 3.6: at most ~48 ms, and no float overflow


def _warn_if_on_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    warnings.warn(
        f"SharedConfig.{name}() blocks this thread's event loop (a Panel session's IOLoop?) for a round trip to the "
        f"session monitor: use `await cfg.a{name}(...)` in an async callback",
        BlockingCallWarning,
        stacklevel=3,
    )


_configs: dict[str, SharedConfig] = {}
_configs_lock = threading.Lock()


def shared_config(app: str) -> SharedConfig:
    """The shared config of ``app`` (one URL path segment: no ``/``), followed by this process from now on."""
    if not isinstance(app, str) or not app.strip() or "/" in app or len(app) > 200:
        raise ConfigError(f"config app name {app!r}: 1-200 characters, no '/'")
    try:
        printable(app)
    except ValueError as exc:
        raise ConfigError(f"config app name {app!r}: {exc}") from None
    agent = get_agent()
    with _configs_lock:
        cfg = _configs.get(app)
        if cfg is None or cfg._agent is not agent:
            cfg = _configs[app] = SharedConfig(app, agent)
        return cfg


def reset() -> None:
    """Forget every SharedConfig (tests; the agent's own reset forgets the values)."""
    with _configs_lock:
        _configs.clear()


__all__ = ["BlockingCallWarning", "SharedConfig", "encode", "reset", "shared_config"]
