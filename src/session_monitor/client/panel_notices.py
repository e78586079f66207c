"""Notices (:mod:`~session_monitor.client.notices`) shown as page banners (:mod:`~session_monitor.client.banner`).

An announcement is a banner the user may hide, gone by itself at its ``until``; a kill with notice is a countdown
to its deadline. The Panel binding hands in how to reach a session's page, so this module never imports it.
"""

from __future__ import annotations

from collections.abc import Callable

from session_monitor.client import banner, notices


class BannerDisplay:
    """The notice board's display: each notice as a banner in the session's page (from any thread)."""

    def __init__(self, show: Callable[[str, banner.Banner], bool], remove: Callable[[str, str], bool]) -> None:
        self._show, self._remove = show, remove

    def show(self, session_id: str, notice: notices.Notice) -> None:
        kill = notice.get("kind") == "kill"
        self._show(
            session_id,
            banner.Banner(
                notice["id"],
                notice["message"],
                level=notice.get("level") or "info",
                deadline=notice.get("deadline") if kill else None,
                expires_at=notice.get("until"),
                dismissible=not kill,
            ),
        )

    def remove(self, session_id: str, notice_id: str) -> None:
        self._remove(session_id, notice_id)
