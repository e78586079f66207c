"""This process's drain, as the server last said (every sync answer carries it), and who must know.

The agent thread calls :meth:`DrainWatch.update` with each sync answer's ``drain``; a change is passed to
the listeners (the Panel binding: the message and countdown on every page), and a timer on the agent's loop
calls :meth:`DrainListener.drain_due` at the deadline (the sessions end as ``drained``). The readiness port
(``readiness.py``) answers from :attr:`DrainWatch.current`. While the server is unreachable the last known
drain holds: a process is never made unready, nor ready again, by an outage.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drain:
    """A drain of this process: its sessions end as ``drained`` at ``deadline``; ``message`` is for the users."""

    deadline: datetime
    message: str
    started_at: datetime

    @classmethod
    def from_wire(cls, value: Any) -> Drain | None:
        """The ``drain`` of a sync answer (``DrainInfo``), or ``None`` for null or anything malformed."""
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                deadline=_aware(value["deadline"]),
                message=str(value.get("message") or ""),
                started_at=_aware(value.get("started_at") or value["deadline"]),
            )
        except (KeyError, TypeError, ValueError):
            logger.warning("malformed drain %r ignored", value)
            return None

    def seconds_left(self, now: datetime | None = None) -> float:
        return (self.deadline - (now or datetime.now(UTC))).total_seconds()


def _aware(text: Any) -> datetime:
    value = datetime.fromisoformat(str(text))
    if value.tzinfo is None:
        raise ValueError("naive time")
    return value.astimezone(UTC)


class DrainListener(Protocol):
    def drain_changed(self, drain: Drain | None) -> None:
        """The drain began, moved, or was lifted (``None``); called on the agent thread, must not block."""

    def drain_due(self, drain: Drain) -> None:
        """The deadline came: end the sessions as ``drained``; called on the agent thread, must not block."""


class DrainWatch:
    """The process's drain and its deadline timer (see the module docstring)."""

    def __init__(self) -> None:
        self.current: Drain | None = None
        self.changed_at: float | None = None
        """``time.monotonic()`` of the last change (for readiness figures)."""
        self._listeners: list[DrainListener] = []
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None

    def listen(self, listener: DrainListener) -> None:
        with self._lock:
            if listener not in self._listeners:
                self._listeners.append(listener)

    @property
    def ready(self) -> bool:
        """Whether load balancers may send this process new sessions."""
        return self.current is None

    def update(self, wire: Any) -> None:
        """From a sync answer, on the agent's loop: tell the listeners of a change and arm the deadline."""
        drain = Drain.from_wire(wire)
        if drain == self.current:
            return
        self.current = drain
        self.changed_at = asyncio.get_running_loop().time()
        if drain is None:
            logger.info("this process is ready again (undrained)")
        else:
            logger.info("this process is draining: its sessions end at %s", drain.deadline.isoformat())
        for listener in list(self._listeners):
            try:
                listener.drain_changed(drain)
            except Exception:
                logger.exception("drain listener failed")
        self._arm(drain)

    def _arm(self, drain: Drain | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if drain is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(max(0.0, drain.seconds_left()), self._due, drain)

    def _due(self, drain: Drain) -> None:
        self._timer = None
        if drain != self.current:
            return
        logger.info("drain deadline: ending this process's sessions as drained")
        for listener in list(self._listeners):
            try:
                listener.drain_due(drain)
            except Exception:
                logger.exception("drain listener failed")
