"""The agent's session table: the latest state of each live session, what changed since the last sync,
the ends the server has not acknowledged yet, and the ids killed (to refuse their reconnection).

Any thread changes it under :attr:`SessionTable.lock`; the agent thread takes a :class:`Batch` out for a
sync and, depending on the answer, acknowledges it or puts it back.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from session_monitor.client import cost
from session_monitor.protocol import DRAIN, KILL

logger = logging.getLogger("session_monitor.client.agent")  # command handling is the agent's: one logger

ExemptRule = Callable[[str, str | None], bool]
"""Whether a policy exempts sessions of this app (first argument) or user (second) from culling."""

KillHandler = Callable[[str | None], None]
"""Called on the agent thread with the kill reason; must only schedule work, never block."""

MAX_REMEMBERED_KILLS = 10_000
"""Killed session ids remembered to refuse their reconnection."""

MAX_PENDING_ENDS = 10_000
"""Ends kept while the server is unreachable; the oldest are dropped beyond this."""

TIMING_CHANGE_S = 0.05
"""Between full cost refreshes, a session's timing is sent again once its work time grew by this much."""


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
    cost: dict[str, Any] | None = None
    """What the session costs (``usage.py``), once measured."""
    exempt: bool = False
    """The app marked it exempt from idle culling and maximum age (``SessionClient.exempt``)."""
    policy_exempt: bool = False
    """A policy exempts its app or user (set by :class:`SessionTable` as it sends the record)."""

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
            "cost": self.cost,
            "exempt": self.exempt or self.policy_exempt,
        }


def _work_s(cost: dict[str, Any]) -> float:
    return float(cost.get("loop_seconds_total") or 0.0) + float(cost.get("pool_thread_seconds") or 0.0)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(frozen=True, slots=True)
class Batch:
    """What one sync sends: every live session (``full``) or those that changed, and the pending ends."""

    full: bool
    sessions: list[dict[str, Any]]
    sent_dirty: set[str]
    ended: list[dict[str, Any]]


class SessionTable:
    """The sessions of one agent (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.records: dict[str, SessionRecord] = {}
        self.handlers: dict[str, KillHandler] = {}
        self.dirty: set[str] = set()
        self.ended: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.killed: OrderedDict[str, None] = OrderedDict()
        self.full = True
        """The next sync sends every live session (at start, after an outage or a failover, on the server's ask)."""
        self.facts_changed = False
        """The process's own facts changed (its leftovers): send a sync even if no session changed."""
        self.exiting = False
        """The process is exiting: changes are held back for the last sync, so every end is in that one."""
        self.exempt_rule: ExemptRule | None = None
        """The policies' exemptions (set by the agent from its sync answers)."""
        self.refused: dict[str, dict[str, Any]] = {}
        """Sessions refused by a limit, each sent once with its end: the server lists them in history."""

    def track(self, record: SessionRecord, on_kill: KillHandler) -> None:
        cost.revive(record.session_id)
        with self.lock:
            self.records[record.session_id] = record
            self.handlers[record.session_id] = on_kill
            self.dirty.add(record.session_id)
            self.ended.pop(record.session_id, None)

    def changed(self, session_id: str) -> None:
        """The record of ``session_id`` was changed in place (under :attr:`lock`)."""
        self.dirty.add(session_id)

    def end(self, session_id: str, reason: str) -> None:
        """Forget a live session and keep its end until acknowledged. Unknown or already ended ids are ignored."""
        cost.mark_ended(session_id)
        with self.lock:
            record = self.records.pop(session_id, None)
            self.handlers.pop(session_id, None)
            self.dirty.discard(session_id)
            if record is None:
                return
            if reason == "refused":
                self.refused[session_id] = record.wire()
            self.ended[session_id] = {
                "session_id": session_id,
                "reason": reason,
                "ended_at": datetime.now(UTC).isoformat(),
            }
            while len(self.ended) > MAX_PENDING_ENDS:
                self.ended.popitem(last=False)

    def apply_costs(self, costs: dict[str, dict[str, Any]], *, timings_only: bool = False) -> None:
        """Put measured costs on the live records; a record whose cost changed is sent at the next sync.

        ``timings_only``: ``costs`` hold only the timing fields; they are merged into the last full
        measurement, and only if the session's work time grew by :data:`TIMING_CHANGE_S` or more.
        """
        with self.lock:
            for sid, new in costs.items():
                record = self.records.get(sid)
                if record is None:
                    continue
                old = record.cost
                if timings_only:
                    if old is None or _work_s(new) - _work_s(old) < TIMING_CHANGE_S:
                        continue
                    record.cost = {**old, **new}
                elif old is not None and all(old.get(k) == v for k, v in new.items() if k != "measured_at"):
                    continue
                else:
                    record.cost = new
                self.dirty.add(sid)

    def remember_kill(self, session_id: str) -> None:
        with self.lock:
            self.killed[session_id] = None
            while len(self.killed) > MAX_REMEMBERED_KILLS:
                self.killed.popitem(last=False)

    def dispatch(self, command: Any) -> None:
        """Carry out a command from the server (a kill: remembered, then the session's handler); others logged."""
        if not isinstance(command, dict):
            logger.warning("malformed command %r ignored", command)
            return
        kind, session_id = command.get("kind"), command.get("session_id")
        if kind == DRAIN:
            self.facts_changed = True  # sync at the next flush: its answer carries the drain
            return
        if kind != KILL:
            logger.warning("unknown command kind %r ignored", kind)
            return
        if not isinstance(session_id, str):
            return
        self.remember_kill(session_id)
        handler = self.handlers.get(session_id)
        if handler is None:
            return  # not ours any more (ended, or a copy in another process)
        try:
            handler(command.get("reason"))
        except Exception:
            logger.exception("session %s: kill handler failed", session_id)

    def begin_exit(self) -> None:
        with self.lock:
            self.exiting = True

    def resync(self) -> None:
        """Send everything next time: the server may have missed anything."""
        with self.lock:
            self.full = True

    @property
    def pending(self) -> bool:
        """Whether anything is waiting to be sent."""
        return self.full or self.facts_changed or bool(self.dirty) or bool(self.ended)

    def take_batch(self, *, exiting: bool) -> Batch:
        """The next sync's content; the changes it carries are no longer dirty (see :meth:`batch_failed`)."""
        with self.lock:
            full = self.full
            ids = list(self.records) if full else [sid for sid in self.dirty if sid in self.records]
            rule = self.exempt_rule
            if rule is not None:
                for sid in ids:
                    record = self.records[sid]
                    record.policy_exempt = rule(record.app_name, record.user_id)
            sessions = [self.records[sid].wire() for sid in ids]
            sessions += [wire for sid, wire in self.refused.items() if sid in self.ended]
            sent_dirty = set(self.dirty)
            self.dirty.clear()
            self.facts_changed = False
            ended = list(self.ended.values()) if exiting or not self.exiting else []
        return Batch(full, sessions, sent_dirty, ended)

    def batch_failed(self, batch: Batch) -> None:
        """The sync did not go through: its changes are dirty again, and the next sync is a full one."""
        with self.lock:
            self.dirty |= {sid for sid in batch.sent_dirty if sid in self.records}
            self.full = True

    def batch_sent(self, batch: Batch, *, resync: bool) -> None:
        """The server took the sync: its ends are acknowledged; ``resync``: it asks for every session."""
        with self.lock:
            for end in batch.ended:
                if self.ended.get(end["session_id"]) is end:
                    del self.ended[end["session_id"]]
                    self.refused.pop(end["session_id"], None)
            self.full = resync

    def exemptions_changed(self) -> None:
        """The policies' exemptions changed: send every record whose flag they change."""
        rule = self.exempt_rule
        if rule is None:
            return
        with self.lock:
            for sid, record in self.records.items():
                if rule(record.app_name, record.user_id) != record.policy_exempt:
                    self.dirty.add(sid)
