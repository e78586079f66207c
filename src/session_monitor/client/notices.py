"""The agent's side of notices: the active set the server sent, and which live pages show which notice.

The agent hands every answer that may carry notices (sync answers, command long-polls) to :meth:`NoticeBoard.receive`;
the Panel binding tells the board which sessions are live (:meth:`~NoticeBoard.session_started` once the first
websocket connected, :meth:`~NoticeBoard.session_ended`) and gives it a :class:`Display` that shows and removes banners
(``client/banner.py``, on each session's IOLoop). The board only computes what each page should show and calls the
display, which queues; it never does I/O. Panel-free: the agent imports it.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Notice = dict[str, Any]
"""One notice as the server sends it (``protocol.Notice``), with its times as ``datetime``."""


class Display(Protocol):
    """Where notices go: a page's banners. Both calls may come from any thread and must only queue work."""

    def show(self, session_id: str, notice: Notice) -> None: ...
    def remove(self, session_id: str, notice_id: str) -> None: ...


def _time(value: Any) -> datetime | None:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, datetime) else None


def _parse(raw: Any) -> Notice | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not isinstance(raw.get("message"), str):
        return None
    notice = dict(raw)
    notice["deadline"] = _time(raw.get("deadline"))
    notice["until"] = _time(raw.get("until"))
    return notice


def matches(notice: Notice, session_id: str, app_name: str) -> bool:
    """Whether the page of this session shows ``notice`` (null targets mean any)."""
    apps, ids = notice.get("apps"), notice.get("session_ids")
    return (apps is None or app_name in apps) and (ids is None or session_id in ids)


class NoticeBoard:
    """The active notices of this process and what each live page shows (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rev = ""
        """Revision of the active set held (sent back on the long-poll: the server answers when it differs)."""
        self.notices: dict[str, Notice] = {}
        self._apps: dict[str, str] = {}
        self._shown: dict[str, dict[str, Notice]] = {}
        self.display: Display | None = None

    def receive(self, answer: Any) -> None:
        """A server answer: take its ``notices`` if their revision is new, and update every live page."""
        if not isinstance(answer, dict):
            return
        raw, rev = answer.get("notices"), answer.get("notices_rev")
        if not isinstance(raw, list) or not isinstance(rev, str) or rev == self.rev:
            return
        notices = [n for n in map(_parse, raw) if n is not None]
        with self._lock:
            self.rev = rev
            self.notices = {n["id"]: n for n in notices}
            for session_id in list(self._apps):
                self._refresh(session_id)

    def session_started(self, session_id: str, app_name: str) -> None:
        """A live page (its first websocket connected): show it the notices that concern it."""
        with self._lock:
            self._apps[session_id] = app_name
            self._refresh(session_id)

    def session_ended(self, session_id: str) -> None:
        with self._lock:
            self._apps.pop(session_id, None)
            self._shown.pop(session_id, None)

    def shown(self, session_id: str) -> list[str]:
        """The ids of the notices the page of ``session_id`` was given."""
        with self._lock:
            return list(self._shown.get(session_id, {}))

    def _refresh(self, session_id: str) -> None:
        """Under the lock: show the page what it lacks, take away what is no longer active."""
        app = self._apps[session_id]
        wanted = {nid: n for nid, n in self.notices.items() if matches(n, session_id, app)}
        shown = self._shown.setdefault(session_id, {})
        display = self.display
        for nid in [nid for nid in shown if nid not in wanted]:
            del shown[nid]
            if display is not None:
                self._call(display.remove, session_id, nid)
        for nid, notice in wanted.items():
            if shown.get(nid) != notice:
                shown[nid] = notice
                if display is not None:
                    self._call(display.show, session_id, notice)

    @staticmethod
    def _call(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            logger.exception("session %s: could not update its notices", args[0])


_board = NoticeBoard()


def board() -> NoticeBoard:
    """The process's notice board."""
    return _board


def reset() -> None:
    """Forget every notice and page (tests)."""
    global _board
    display = _board.display
    _board = NoticeBoard()
    _board.display = display
