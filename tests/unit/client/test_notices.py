"""The agent's notice board: which live page shows which notice, from the sets the server sends."""

from __future__ import annotations

from typing import Any

from session_monitor.client.notices import NoticeBoard


class Pages:
    """A display that keeps, per session, the notices shown (what the banners would be)."""

    def __init__(self) -> None:
        self.shown: dict[str, dict[str, Any]] = {}

    def show(self, session_id: str, notice: dict[str, Any]) -> None:
        self.shown.setdefault(session_id, {})[notice["id"]] = notice

    def remove(self, session_id: str, notice_id: str) -> None:
        self.shown.get(session_id, {}).pop(notice_id)


def notice(nid: str, **targets: Any) -> dict[str, Any]:
    return {"id": nid, "kind": "announcement", "message": f"about {nid}", "level": "info", "apps": None,
            "session_ids": None, "deadline": None, "until": None, **targets}  # fmt: skip


def test_pages_show_what_targets_them_and_lose_what_goes() -> None:
    board, pages = NoticeBoard(), Pages()
    board.display = pages
    board.session_started("s1", "sales")
    board.session_started("s2", "hr")
    board.receive({"notices": [notice("a1"), notice("a2", apps=["sales"]), notice("k1", session_ids=["s2"])],
                   "notices_rev": "r1"})  # fmt: skip
    assert {sid: sorted(n) for sid, n in pages.shown.items()} == {"s1": ["a1", "a2"], "s2": ["a1", "k1"]}
    # A page opened while they are active gets them at once.
    board.session_started("s3", "sales")
    assert sorted(pages.shown["s3"]) == ["a1", "a2"]
    # The same revision again changes nothing; a new one without a1 takes it away everywhere.
    board.receive({"notices": [], "notices_rev": "r1"})
    assert "a1" in pages.shown["s1"]
    board.receive({"notices": [notice("a2", apps=["sales"])], "notices_rev": "r2"})
    assert {sid: sorted(n) for sid, n in pages.shown.items()} == {"s1": ["a2"], "s2": [], "s3": ["a2"]}
    assert board.rev == "r2" and board.shown("s1") == ["a2"]


def test_an_ended_page_is_forgotten_and_times_are_read() -> None:
    board, pages = NoticeBoard(), Pages()
    board.display = pages
    board.session_started("s1", "sales")
    board.session_ended("s1")
    board.receive({"notices": [notice("k1", kind="kill", deadline="2030-01-01T12:00:00+00:00")], "notices_rev": "r1"})
    assert pages.shown == {} and board.shown("s1") == []
    board.session_started("s2", "hr")
    assert pages.shown["s2"]["k1"]["deadline"].year == 2030


def test_malformed_answers_are_ignored() -> None:
    board = NoticeBoard()
    answers: list[Any] = [None, [], {"notices": "x", "notices_rev": "r"}, {"notices": [], "notices_rev": 3}, {}]
    for answer in answers:
        board.receive(answer)
    assert board.rev == "" and board.notices == {}
    board.receive({"notices": [{"id": 1}, notice("ok")], "notices_rev": "r9"})
    assert list(board.notices) == ["ok"]
