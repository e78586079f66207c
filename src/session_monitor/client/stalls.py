"""Stall events: a watchdog thread that catches the IOLoop blocked, and the stack it was blocked in.

The watchdog never runs on the loop. It sleeps on an ``Event`` until the next probe's deadline (its due
time plus ``stall_s``); a healthy loop has moved the deadline by then, so it sleeps again: a few wake-ups
per second, no polling. When the probe is still not run at the deadline, the loop is stalled: it takes
the loop thread's stack with ``sys._current_frames()`` right then (once per stall), notes the session
whose work was running (:func:`session_monitor.client.loop.running`), and queues the stall. It then
sleeps until the loop is back: the probe, running late, reports the end (``finish``), which makes the
duration final. Stalls are sent with the next sync (open ones with the duration so far, again when
final); the queue is bounded and counts what it drops.
"""

from __future__ import annotations

import linecache
import logging
import os
import re
import sys
import sysconfig
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from session_monitor.client import loop as work
from session_monitor.client import threads
from session_monitor.client.loop_probe import LoopProbe
from session_monitor.protocol import (
    MAX_FRAME_CODE,
    MAX_FRAME_FILE,
    MAX_FRAME_FUNCTION,
    MAX_SESSION_ID,
    MAX_STALL_FRAMES,
    SESSION_ID_PATTERN,
)

logger = logging.getLogger(__name__)

STALL_S = 0.5
"""The loop counts as stalled once its probe is this late (``SESSION_MONITOR_STALL_S``)."""

MAX_QUEUED_STALLS = 100
"""Stalls kept until a sync takes them; beyond, the oldest are dropped (and counted)."""

MAX_WALK_FRAMES = 500
"""Frames walked from the innermost one (a deep recursion is cut there)."""

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_LIBRARY_DIRS = tuple(
    sorted(
        {
            os.path.abspath(path) + os.sep
            for key in ("stdlib", "platstdlib", "purelib", "platlib")
            if (path := sysconfig.get_paths().get(key))
        }
    )
)


def is_app_file(filename: str) -> bool:
    """Whether a frame's file is the app's own code: not the standard library, site-packages or this package."""
    if not filename or filename.startswith("<"):
        return False
    path = os.path.abspath(filename)
    if "site-packages" in path or "dist-packages" in path or path.startswith(_PACKAGE_DIR):
        return False
    return not path.startswith(_LIBRARY_DIRS)


def _clean(text: str, limit: int, *, keep_tail: bool = False) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in text)
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :] if keep_tail else text[: limit - 1] + "…"


def stack_of(frame: FrameType | None, max_frames: int = MAX_STALL_FRAMES) -> list[dict[str, Any]]:
    """The stack from ``frame`` outwards as wire frames, the app's own first, innermost first in each group."""
    app: list[dict[str, Any]] = []
    library: list[dict[str, Any]] = []
    walked = 0
    while frame is not None and walked < MAX_WALK_FRAMES:
        code = frame.f_code
        filename, line = code.co_filename, frame.f_lineno or 0
        is_app = is_app_file(filename)
        source = linecache.getline(filename, line).strip() if line else ""
        entry = {
            "file": _clean(filename, MAX_FRAME_FILE, keep_tail=True),
            "line": line,
            "function": _clean(getattr(code, "co_qualname", code.co_name), MAX_FRAME_FUNCTION),
            "code": _clean(source, MAX_FRAME_CODE) or None,
            "app": is_app,
        }
        (app if is_app else library).append(entry)
        frame = frame.f_back
        walked += 1
    return (app + library)[:max_frames]


@dataclass
class StallRecord:
    """One stall as the agent keeps it until the server has its final version."""

    seq: int
    start: float
    """``time.monotonic()`` when the loop began to block (the callback's start when known, else the probe's due)."""
    started_at: datetime
    session_id: str | None
    function: str | None
    stack: list[dict[str, Any]] = field(default_factory=list)
    end: float | None = None
    version: int = 0
    sent_version: int = -1

    @property
    def final(self) -> bool:
        return self.end is not None

    def wire(self, now: float) -> dict[str, Any]:
        end = self.end if self.end is not None else now
        return {
            "seq": self.seq,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(max(0.0, end - self.start), 3),
            "final": self.final,
            "session_id": self.session_id,
            "function": self.function,
            "stack": self.stack,
        }


@dataclass(frozen=True)
class StallBatch:
    """The stalls one sync carries, with the version of each that was sent."""

    stalls: list[dict[str, Any]]
    versions: dict[int, int]


class StallWatchdog:
    """Watches one :class:`LoopProbe` from a thread of its own (see the module docstring)."""

    def __init__(self, probe: LoopProbe, *, stall_s: float = STALL_S, max_queued: int = MAX_QUEUED_STALLS) -> None:
        self.probe = probe
        self.stall_s = stall_s
        self.max_queued = max_queued
        probe.late_after_s = stall_s
        probe.on_late = self.finish
        self.stalls: OrderedDict[int, StallRecord] = OrderedDict()
        self.dropped = 0
        self.detected = 0
        self.wakeups = 0
        """Times the watchdog woke up (for tests and the benchmark: a healthy loop costs a few per second)."""
        self._lock = threading.Lock()
        self._open: dict[float, StallRecord] = {}
        """Stalls seen by the watchdog and not ended yet, by the due time of the probe that was late."""
        self._seq = 0
        self._caught: float | None = None
        self._stop = threading.Event()
        self._resumed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="session-monitor-watchdog", daemon=True)

    def start(self) -> None:
        with threads.untracked():
            self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        self._resumed.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # -- watchdog thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        probe, loop_clock = self.probe, self.probe.loop.time
        while not self._stop.is_set():
            self.wakeups += 1
            due = probe.due
            if due is None or not probe.running():
                self._stop.wait(self.stall_s)  # not started yet, or the loop stopped: nothing to watch
                continue
            wait_s = due + self.stall_s - loop_clock()
            if wait_s > 0:
                self._stop.wait(wait_s)
                continue
            if due == self._caught:  # this stall is recorded: sleep until the loop is back
                self._resumed.wait()
                self._resumed.clear()
                continue
            try:
                caught = self._catch(due)
            except Exception:
                logger.exception("stall watchdog: could not record a stall")
                caught = False
            if caught:
                self._resumed.wait()  # until the loop is back (``finish``) or we stop
                self._resumed.clear()

    def _catch(self, due: float) -> bool:
        """The probe due at ``due`` has not run ``stall_s`` later: take the loop's stack now, while it is blocked."""
        thread_id = self.probe.thread_id
        frame = sys._current_frames().get(thread_id) if thread_id is not None else None
        running = work.running()
        start = due
        if running is not None and running.started <= due:
            start = running.started
        # The stack before the record is queued: a sync taking the queue meanwhile must not send it without one.
        stack = stack_of(frame)
        del frame
        with self._lock:
            if self.probe.due != due:  # the loop came back meanwhile: ``finish`` recorded it (without a stack)
                return False
            record = self._new(start, running, stack)
            self._open[due] = record
            self._caught = due
            self._queue(record)
        logger.warning(
            "loop stalled for more than %.2f s in %s (session %s)",
            self.stall_s,
            _where(stack) or record.function or "?",
            record.session_id or "unknown",
        )
        return True

    def _new(self, start: float, running: work.Work | None, stack: list[dict[str, Any]]) -> StallRecord:
        self._seq += 1
        self.detected += 1
        started_at = datetime.now(UTC) - timedelta(seconds=max(0.0, self.probe.loop.time() - start))
        return StallRecord(
            seq=self._seq,
            start=start,
            started_at=started_at,
            session_id=_wire_session_id(running.session_id if running is not None else None),
            function=_clean(running.function, MAX_FRAME_FUNCTION) if running is not None else None,
            stack=stack,
        )

    def _queue(self, record: StallRecord) -> None:
        self.stalls[record.seq] = record
        while len(self.stalls) > self.max_queued:
            self.stalls.popitem(last=False)
            self.dropped += 1

    # -- loop thread: the probe ran late ---------------------------------------------------------

    def finish(self, due: float, ran_at: float) -> None:
        """The probe due at ``due`` ran at ``ran_at``: a stall ends (one the watchdog missed is recorded too)."""
        with self._lock:
            record = self._open.pop(due, None)
            if record is None:
                # Caught too late to take the stack (the watchdog was starved or the process suspended).
                record = self._new(due, None, [])
                self._queue(record)
            if record.end is None or record.end > ran_at:
                record.end = ran_at
            record.version += 1
        self._resumed.set()

    # -- agent thread ------------------------------------------------------------------------------

    @property
    def pending(self) -> bool:
        """Whether a sync is due for stalls: a new or finished one. An open one rides along with every sync
        (its duration growing), without making the agent sync more often than its interval."""
        with self._lock:
            return any(r.sent_version != r.version for r in self.stalls.values())

    def take(self) -> StallBatch:
        """The stalls to send now: the changed ones and every open one (its duration grows)."""
        now = self.probe.loop.time()
        with self._lock:
            chosen = [r for r in self.stalls.values() if r.sent_version != r.version or not r.final]
            return StallBatch([r.wire(now) for r in chosen], {r.seq: r.version for r in chosen})

    def sent(self, batch: StallBatch) -> None:
        """The server has ``batch``: forget the stalls whose final version it has."""
        with self._lock:
            for seq, version in batch.versions.items():
                record = self.stalls.get(seq)
                if record is None:
                    continue
                record.sent_version = max(record.sent_version, version)
                if record.final and record.sent_version >= record.version:
                    del self.stalls[seq]


_SESSION_ID_RE = re.compile(SESSION_ID_PATTERN)


def _wire_session_id(session_id: str | None) -> str | None:
    """The session id if the server would take it (else none: a refused stall must not fail every sync)."""
    if session_id is None or len(session_id) > MAX_SESSION_ID or not _SESSION_ID_RE.match(session_id):
        return None
    return session_id


def _where(stack: list[dict[str, Any]]) -> str:
    if not stack:
        return ""
    top = stack[0]
    return f"{top['function']} ({os.path.basename(top['file'])}:{top['line']})"
