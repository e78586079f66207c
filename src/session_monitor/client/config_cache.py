"""The agent's copy of the shared config it follows: values and versions, the follow state, the copy on disk.

Reads (``SharedConfig.get``) are served from here and never wait on the network. The agent thread fills it
from its syncs and command long-polls (``received``) and from the answers to this process's own writes
(``wrote``). A change is applied only when its version is newer than the one held, so a value is never
replaced by an older one and each watcher is called once per version it sees (several quick changes may
arrive as one: the latest). A full snapshot (the first answer after following an app, or after the server's
database was recreated) replaces the apps' keys outright.

On disk: one JSON file per server and app under :func:`cache_dir`, written atomically (a temporary file in the
same folder, flushed and synced, then renamed over the old one), so a Panel process started while the monitor
is down begins with the last values any process on this machine saw; a torn file is never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from session_monitor.client.config import env_setting

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "SESSION_MONITOR_CONFIG_CACHE_DIR"


def cache_dir() -> Path | None:
    """``SESSION_MONITOR_CONFIG_CACHE_DIR``, else ``$XDG_CACHE_HOME/session-monitor/config`` (``~/.cache``).

    ``off`` (or ``none``) keeps no copy on disk.
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    raw = env_setting(CACHE_DIR_ENV, str(base / "session-monitor" / "config"), str)
    if raw.strip().lower() in ("off", "none"):
        return None
    return Path(raw).expanduser()


@dataclass(slots=True)
class Entry:
    text: str
    """The value as JSON text (a fresh copy is parsed from it for every read of a container)."""
    value: Any
    version: int
    revision: int = 0
    """The server's revision of this version (0: unknown, from disk)."""


Scheduler = Callable[[Callable[[], None]], bool]
"""Runs a callback where its watcher wants it (the session's IOLoop); returns False once that is gone."""


@dataclass(eq=False)
class Watcher:
    callback: Callable[[Any, int], Any]
    schedule: Scheduler


@dataclass
class _Follow:
    """What was sent in a sync or a long-poll: its epoch (answers for another epoch are stale)."""

    epoch: int


@dataclass
class ConfigCache:
    """Shared-config values of the apps this process follows (see the module docstring)."""

    server_url: str
    directory: Path | None = None
    wake: Callable[[], None] | None = None
    """Wakes the agent: an app was followed, its sync must say so now."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    apps: dict[str, dict[str, Entry]] = field(default_factory=dict)
    epoch: int = 0
    cursor: int = 0
    confirmed_epoch: int = -1
    """The epoch the server answered for (a sync): until then the follow is pending."""
    loaded: set[str] = field(default_factory=set)
    """Apps whose values came from the server at least once (else from disk, or nothing yet)."""
    watchers: dict[tuple[str, str], list[Watcher]] = field(default_factory=dict)
    _unsaved: dict[str, dict[str, Entry]] = field(default_factory=dict)
    _saving: threading.Event = field(default_factory=threading.Event)
    _saver: threading.Thread | None = None

    # -- any thread --------------------------------------------------------------------------------

    def follow(self, app: str) -> None:
        """Start following ``app`` (once): its copy on disk now, the server's values at the next sync."""
        with self.lock:
            if app in self.apps:
                return
            self.apps[app] = self._load(app)
            self.epoch += 1
            self.cursor = 0  # a full snapshot of every followed app: the new one's keys are all news
        if self.wake is not None:
            self.wake()

    def entry(self, app: str, key: str) -> Entry | None:
        with self.lock:
            return self.apps.get(app, {}).get(key)

    def keys(self, app: str) -> list[str]:
        with self.lock:
            return sorted(self.apps.get(app, {}))

    def add_watcher(self, app: str, key: str, watcher: Watcher) -> Callable[[], None]:
        with self.lock:
            self.watchers.setdefault((app, key), []).append(watcher)
        return lambda: self.remove_watcher(app, key, watcher)

    def remove_watcher(self, app: str, key: str, watcher: Watcher) -> None:
        with self.lock:
            found = self.watchers.get((app, key), [])
            if watcher in found:
                found.remove(watcher)
            if not found:
                self.watchers.pop((app, key), None)

    @property
    def pending(self) -> bool:
        """An app was followed and the server has not answered for it yet: sync now."""
        return bool(self.apps) and self.confirmed_epoch != self.epoch

    # -- agent thread ------------------------------------------------------------------------------

    def sync_request(self) -> tuple[dict[str, Any] | None, _Follow]:
        with self.lock:
            follow = _Follow(self.epoch)
            if not self.apps:
                return None, follow
            return {"apps": sorted(self.apps), "epoch": self.epoch, "after": self.cursor}, follow

    def poll_params(self) -> tuple[dict[str, int], _Follow]:
        with self.lock:
            follow = _Follow(self.epoch)
            if not self.apps or self.confirmed_epoch != self.epoch:
                return {}, follow
            return {"config_after": self.cursor, "config_epoch": self.epoch}, follow

    def received(self, data: dict[str, Any], sent: _Follow, *, sync: bool) -> bool:
        """Apply the config part of an answer (a sync's when ``sync``), if it is for the current epoch.

        Returns whether the answer confirmed a new follow (the long-poll should then ask again with it).
        """
        if data.get("config_epoch") is None:
            return False
        fired: list[tuple[str, str, Any, int]] = []
        changed: set[str] = set()
        with self.lock:
            if data.get("config_epoch") != self.epoch or sent.epoch != self.epoch:
                return False  # answered for an older follow list: the next sync brings the right one
            full = bool(data.get("config_full"))
            seen: dict[str, set[str]] = {app: set() for app in self.apps} if full else {}
            cursor = data.get("config_cursor")
            newest = cursor if isinstance(cursor, int) else 0
            for change in data.get("config") or ():
                app, key = change.get("app"), change.get("key")
                if app not in self.apps or not isinstance(key, str):
                    continue
                seen.get(app, set()).add(key)
                self._apply(app, key, change, full, fired, changed, newest)
            for app, keys in seen.items():
                # Gone while we were away (or a new database); a key we wrote after the snapshot was read stays.
                gone = [k for k, e in self.apps[app].items() if k not in keys and not e.revision > newest]
                for key in gone:
                    del self.apps[app][key]
                    fired.append((app, key, None, 0))
                    changed.add(app)
                self.loaded.add(app)
            if isinstance(cursor, int):
                self.cursor = cursor if full else max(self.cursor, cursor)
            confirmed = sync and self.confirmed_epoch != self.epoch
            if sync:
                self.confirmed_epoch = self.epoch
            snapshot = {app: dict(self.apps[app]) for app in changed}
        self._persist(snapshot)
        self._fire(fired)
        return confirmed

    def wrote(self, app: str, key: str, value_text: str | None, version: int, revision: int) -> None:
        """This process's own write was acknowledged: read-your-writes, and its watchers see it now."""
        change = {"value": None if value_text is None else json.loads(value_text), "version": version,
                  "deleted": value_text is None, "text": value_text, "revision": revision}  # fmt: skip
        fired: list[tuple[str, str, Any, int]] = []
        changed: set[str] = set()
        with self.lock:
            if app not in self.apps:
                return
            self._apply(app, key, change, False, fired, changed)
            snapshot = {a: dict(self.apps[a]) for a in changed}
        self._persist(snapshot)
        self._fire(fired)

    def _apply(
        self,
        app: str,
        key: str,
        change: dict[str, Any],
        full: bool,
        fired: list[tuple[str, str, Any, int]],
        changed: set[str],
        newest: int = 0,
    ) -> None:
        """Take one key's new state. A full snapshot (revision ``newest``) is the truth, whatever the versions
        held (a recreated database starts them again), except for our own writes made after it was read."""
        version = change.get("version")
        if not isinstance(version, int):
            return
        held = self.apps[app].get(key)
        if held is not None and not full and version <= held.version:
            return  # an older or the same version
        if held is not None and full and held.revision > newest:
            return  # our own write, newer than the snapshot

        if change.get("deleted"):
            if held is None:
                return
            del self.apps[app][key]
            fired.append((app, key, None, version))
        else:
            text = change.get("text") or json.dumps(change.get("value"), separators=(",", ":"), ensure_ascii=False)
            if held is not None and held.version == version and held.text == text:
                return
            self.apps[app][key] = Entry(text, change.get("value"), version, int(change.get("revision") or 0))
            fired.append((app, key, change.get("value"), version))
        changed.add(app)

    def _fire(self, fired: list[tuple[str, str, Any, int]]) -> None:
        for app, key, value, version in fired:
            with self.lock:
                watchers = list(self.watchers.get((app, key), ()))
            for watcher in watchers:
                copy = json.loads(json.dumps(value)) if isinstance(value, dict | list) else value
                try:
                    alive = watcher.schedule(_call(watcher.callback, copy, version))
                except Exception:
                    logger.exception("config %s/%s: scheduling a watcher failed", app, key)
                    alive = False
                if not alive:
                    self.remove_watcher(app, key, watcher)

    # -- disk ------------------------------------------------------------------------------------

    def _path(self, app: str) -> Path | None:
        if self.directory is None:
            return None
        digest = hashlib.sha256(f"{self.server_url}\n{app}".encode()).hexdigest()[:24]
        return self.directory / f"{digest}.json"

    def _load(self, app: str) -> dict[str, Entry]:
        path = self._path(app)
        if path is None or not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("app") != app:
                return {}
            return {
                key: Entry(
                    json.dumps(e["value"], separators=(",", ":"), ensure_ascii=False), e["value"], int(e["version"])
                )  # fmt: skip
                for key, e in data.get("entries", {}).items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("config %r: ignoring the copy on disk %s (%s)", app, path, exc)
            return {}

    def _persist(self, snapshot: dict[str, dict[str, Entry]]) -> None:
        """Hand the apps' new state to the saving thread (files are synced to disk: not on the agent's loop)."""
        if self.directory is None or not snapshot:
            return
        with self.lock:
            self._unsaved.update(snapshot)
            if self._saver is None:
                self._saver = threading.Thread(target=self._save_loop, name="session-monitor-config-disk", daemon=True)
                self._saver.start()
        self._saving.set()

    def _save_loop(self) -> None:
        while True:
            self._saving.wait()
            self._saving.clear()
            with self.lock:
                snapshot, self._unsaved = self._unsaved, {}
            self.save(snapshot)

    def flush(self) -> None:
        """Write what is not on disk yet, now (tests, process exit)."""
        with self.lock:
            snapshot, self._unsaved = self._unsaved, {}
        self.save(snapshot)

    def save(self, snapshot: dict[str, dict[str, Entry]]) -> None:
        for app, entries in snapshot.items():
            path = self._path(app)
            if path is None:
                continue
            body = {"app": app, "server": self.server_url,
                    "entries": {k: {"value": e.value, "version": e.version} for k, e in entries.items()}}  # fmt: skip
            try:
                write_atomically(path, json.dumps(body, ensure_ascii=False))
            except OSError as exc:
                logger.warning("config %r: could not keep a copy on disk at %s (%s)", app, path, exc)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never a part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _call(callback: Callable[[Any, int], Any], value: Any, version: int) -> Callable[[], None]:
    def run() -> None:
        try:
            result = callback(value, version)
            if inspect.isawaitable(result):
                asyncio.ensure_future(result)  # an async watcher: on the loop that runs it
        except Exception:
            logger.exception("config watcher %r failed", callback)

    return run
