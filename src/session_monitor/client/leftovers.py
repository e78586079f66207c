"""Leftovers of ended sessions: threads, periodic callbacks and pool jobs still running for them.

:data:`CHECK_AFTER_S` after a session ended (its tracker ended it, or Bokeh destroyed it), the agent
looks for work that still carries the session: threads its code started (``threads.py`` marks them),
periodic callbacks still on its document, executor jobs it submitted still running, and jobs of
``session_monitor.pool`` still running for it. What it finds is reported on the process
(``AgentInfo.leftovers``) while it lasts and logged once at WARNING; a session with none left is forgotten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from session_monitor.client import cost, threads

logger = logging.getLogger(__name__)

CHECK_AFTER_S = 10.0
"""Seconds after a session ended before what still runs for it counts as left over."""

MAX_LEFTOVERS = 100
"""Leftovers reported per process at most (the oldest sessions' first)."""

MAX_LOGGED = 10_000

PeriodicProbe = Callable[[str], list[Any]]
"""The periodic callbacks (callables) still on a session's document; ``[]`` when the document is gone."""
PoolProbe = Callable[[], dict[str, list[Any]]]
"""The ``session_monitor.pool`` jobs running now, by session key (their functions, or names)."""


class LeftoverWatch:
    """Checks ended sessions for leftovers (see the module docstring); call :meth:`check` often, it is cheap."""

    def __init__(self, periodic: PeriodicProbe, pool_jobs: PoolProbe, *, check_after_s: float = CHECK_AFTER_S) -> None:
        self.periodic = periodic
        self.pool_jobs = pool_jobs
        self.check_after_s = check_after_s
        self.current: list[dict[str, Any]] = []
        """The leftovers found by the last check, as ``AgentInfo.leftovers`` carries them."""
        self._logged: dict[tuple[str, str, str], None] = {}

    def due(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return any(m.ended_at is not None and now - m.ended_at >= self.check_after_s for m in cost.meters())

    def check(self, now: float | None = None) -> bool:
        """Look again; whether the list of leftovers changed."""
        mono = time.monotonic() if now is None else now
        ended = sorted(
            (m for m in cost.meters() if m.ended_at is not None and mono - m.ended_at >= self.check_after_s),
            key=lambda m: m.ended_at or 0.0,
        )
        if not ended and not self.current:
            return False
        by_key = threads.by_key()
        pool = self.pool_jobs() if ended else {}
        found: list[dict[str, Any]] = []
        for meter in ended:
            sid = meter.session_id
            ended_at = meter.ended_wall
            items: list[tuple[str, str, Any]] = []
            items += [("thread", t.name, threads.target_of(t)) for t in by_key.get(sid, ())]
            items += [("periodic_callback", "periodic callback", fn) for fn in self.periodic(sid)]
            with meter.lock:
                running = list(meter.jobs.values())
            items += [("pool_job", "executor job", name) for name in running]
            items += [("pool_job", "pool job", fn) for fn in pool.get(sid, ())]
            if not items:
                cost.forget(sid)
                continue
            for kind, name, fn in items:
                function = fn if isinstance(fn, str) else cost.qualname(fn)
                found.append(
                    {"session_id": sid, "ended_at": ended_at, "kind": kind, "name": name[:200], "function": function}
                )
                self._log_once(sid, kind, name, function)
        found = found[:MAX_LEFTOVERS]
        changed = found != self.current
        self.current = found
        return changed

    def _log_once(self, sid: str, kind: str, name: str, function: str) -> None:
        key = (sid, kind, function)
        if key in self._logged:
            return
        self._logged[key] = None
        while len(self._logged) > MAX_LOGGED:
            self._logged.pop(next(iter(self._logged)))
        logger.warning("session %s ended %ss ago but left a %s running: %s (%s)", sid, int(self.check_after_s),
                       kind.replace("_", " "), name, function)  # fmt: skip
