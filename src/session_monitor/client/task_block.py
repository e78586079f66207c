"""``with tracker.task(name):`` and ``async with``: the block that marks a session running."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol


class _Stack(Protocol):
    """The tracker's task stack (``SessionClient``)."""

    def _push_task(self, name: str, token: object) -> None: ...
    def _pop_task(self, token: object) -> None: ...


class TaskBlock:
    """``with tracker.task(name):`` and ``async with``: running while inside, back to the previous state after."""

    __slots__ = ("_name", "_tracker")

    def __init__(self, tracker: _Stack, name: str) -> None:
        self._tracker = tracker
        self._name = name

    def __enter__(self) -> None:
        self._tracker._push_task(self._name, self)

    def __exit__(self, *exc: object) -> None:
        self._tracker._pop_task(self)

    async def __aenter__(self) -> None:
        self._tracker._push_task(self._name, self)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._tracker._pop_task(self)
