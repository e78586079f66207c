"""The banner's wire form: times as epoch milliseconds, levels checked, countdowns first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from session_monitor.client.banner import COUNTDOWN_LEAD, Banner, _ordered


def test_wire_form_sends_absolute_times_once() -> None:
    deadline = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    wire = Banner("kill", "maintenance", level="error", deadline=deadline).wire()
    assert wire == {
        "key": "kill",
        "message": "maintenance",
        "level": "error",
        "deadline_ms": deadline.timestamp() * 1000,
        "lead": COUNTDOWN_LEAD,
        "expires_ms": None,
        "dismissible": False,
    }
    assert Banner("a", "x", level="loud").wire()["level"] == "info"  # type: ignore[arg-type]


def test_countdowns_come_first_soonest_first_then_the_others_in_order() -> None:
    now = datetime.now(UTC)
    items = [
        Banner("a1", "first").wire(),
        Banner("k2", "later", deadline=now + timedelta(minutes=5)).wire(),
        Banner("a2", "second").wire(),
        Banner("k1", "sooner", deadline=now + timedelta(minutes=1)).wire(),
    ]
    assert [b["key"] for b in _ordered(items)] == ["k1", "k2", "a1", "a2"]
