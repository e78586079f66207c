"""The agent's session-limit decision (``client/limits.py``) and how a refused session reaches the server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from session_monitor.client.limits import APP_FULL, APP_USER_FULL, PROCESS_FULL, USER_FULL, Limits
from session_monitor.client.sessions import SessionRecord, SessionTable

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(sid: str, app: str = "sales", user: str | None = "alice") -> SessionRecord:
    return SessionRecord(sid, app, user, started_at=T0)


def limits(policies: dict[str, Any], others: dict[str, Any] | None = None) -> Limits:
    made = Limits()
    made.update(policies, others)
    return made


def test_no_policies_no_refusal() -> None:
    assert Limits().check([record(str(i)) for i in range(1000)], "sales", "alice") is None


@pytest.mark.parametrize(
    ("policies", "others", "own", "refusal"),
    [
        ({"apps": {"sales": {"max_sessions": 3}}}, {"apps": {"sales": 1}}, 1, None),
        ({"apps": {"sales": {"max_sessions": 3}}}, {"apps": {"sales": 1}}, 2, APP_FULL.format(n=3)),
        ({"apps": {"sales": {"max_sessions": 3}}}, {"apps": {"sales": 3}}, 0, APP_FULL.format(n=3)),
        ({"apps": {"sales": {"max_sessions_per_user": 2}}}, {}, 1, None),
        ({"apps": {"sales": {"max_sessions_per_user": 2}}}, {}, 2, APP_USER_FULL.format(n=2)),
        ({"apps": {"sales": {"max_sessions_per_user": 2}}}, {"app_users": {"sales": {"alice": 1}}}, 1,
         APP_USER_FULL.format(n=2)),
        ({"apps": {"sales": {"max_sessions_per_user": 2}}}, {"app_users": {"sales": {"bob": 5}}}, 1, None),
        ({"max_sessions_per_user": 2}, {"users": {"alice": 2}}, 0, USER_FULL.format(n=2)),
        ({"max_sessions_per_process": 2}, {"apps": {"sales": 99}}, 1, None),  # other processes do not count
        ({"max_sessions_per_process": 2}, {}, 2, PROCESS_FULL.format(n=2)),
    ],
)  # fmt: skip
def test_own_exact_counts_plus_the_other_processes_decide(
    policies: dict[str, Any], others: dict[str, Any], own: int, refusal: str | None
) -> None:
    live = [record(f"s{i}") for i in range(own)] + [record("other-app", app="hr"), record("bob", app="hr", user="bob")]
    if policies.get("max_sessions_per_process"):
        live = live[:own]
    assert limits(policies, others).check(live, "sales", "alice") == refusal


def test_a_session_without_user_is_not_counted_against_per_user_limits() -> None:
    policy = limits({"apps": {"sales": {"max_sessions_per_user": 1}}, "max_sessions_per_user": 1})
    assert policy.check([record("a", user=None), record("b", user=None)], "sales", None) is None


def test_an_answer_without_policies_keeps_the_last_ones() -> None:
    policy = limits({"max_sessions_per_process": 1, "exempt_users": ["admin"]})
    assert policy.update(None, None) is False
    assert policy.check([record("a")], "sales", "alice") == PROCESS_FULL.format(n=1)
    assert policy.exempts("x", "admin") and not policy.exempts("x", "alice")
    assert policy.update({"exempt_apps": ["kiosk"]}, None) is True  # the exemptions changed
    assert policy.exempts("kiosk", None) and not policy.exempts("x", "admin")


def test_a_refused_session_is_sent_once_with_its_end() -> None:
    table = SessionTable()
    table.track(record("keep"), lambda _reason: None)
    table.batch_sent(table.take_batch(exiting=False), resync=False)
    table.track(record("refused"), lambda _reason: None)
    table.end("refused", "refused")
    batch = table.take_batch(exiting=False)
    assert [s["session_id"] for s in batch.sessions] == ["refused"]
    assert [(e["session_id"], e["reason"]) for e in batch.ended] == [("refused", "refused")]
    table.batch_sent(batch, resync=False)
    assert table.take_batch(exiting=False).sessions == [] and not table.refused


def test_exempt_records_are_sent_flagged_by_the_app_or_by_policy() -> None:
    table = SessionTable()
    policy = limits({"exempt_users": ["admin"]})
    table.exempt_rule = policy.exempts
    marked = record("marked")
    marked.exempt = True
    for r in (marked, record("admin", user="admin"), record("plain")):
        table.track(r, lambda _reason: None)
    sent = {s["session_id"]: s["exempt"] for s in table.take_batch(exiting=False).sessions}
    assert sent == {"marked": True, "admin": True, "plain": False}
    table.batch_sent(table.take_batch(exiting=False), resync=False)
    policy.update({"exempt_users": []}, None)
    table.exemptions_changed()
    assert {s["session_id"]: s["exempt"] for s in table.take_batch(exiting=False).sessions} == {"admin": False}
