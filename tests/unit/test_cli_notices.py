"""``announce``, kills with notice (``--in``, ``--at``), ``pending-kills`` and ``cancel-kill`` against a real server."""

from __future__ import annotations

from datetime import datetime, timedelta

import click
import httpx
import pytest

from session_monitor.cli.notices import parse_duration, parse_when
from tests.unit.test_cli import ODD_APP, clock, lines_of, register, run, server, session  # noqa: F401 (fixtures)


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("2m30s", 150)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "5 minutes", "-5m", "m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(click.BadParameter):
        parse_duration(text)


def test_times_are_the_next_occurrence_local_or_explicit() -> None:
    now = datetime(2026, 12, 1, 18, 30).astimezone()
    assert parse_when("18:45", now) == now.replace(minute=45)
    assert parse_when("18:05", now) == now.replace(minute=5) + timedelta(days=1)
    assert parse_when("+5m", now) == now + timedelta(minutes=5)
    assert parse_when("2026-12-02T09:00:00+00:00", now).isoformat() == "2026-12-02T09:00:00+00:00"
    with pytest.raises(click.BadParameter):
        parse_when("tea time", now)


def test_announce_lists_and_removes(server: str) -> None:  # noqa: F811
    register(server, "sales")
    result = run(["announce", "Maintenance at 18:00", "--app", "sales", "--level", "warning", "--until", "+30m",
                  "--url", server])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.startswith("announcement 1 shown to app sales until ")
    listed = run(["announce", "--list", "--url", server])
    assert listed.exit_code == 0, listed.output
    assert lines_of(listed)[0].split() == ["ID", "LEVEL", "MESSAGE", "TARGETS", "UNTIL", "BY"]
    assert "Maintenance at 18:00" in lines_of(listed)[1] and lines_of(listed)[-1] == "1 active announcement(s)"
    assert run(["announce", "--remove", "1", "--url", server]).output == "announcement 1 removed\n"
    again = run(["announce", "--remove", "1", "--url", server])
    assert again.exit_code == 1 and "404" in again.output and "no active announcement 1" in again.output


def test_announce_refusals_say_why(server: str) -> None:  # noqa: F811
    assert "give a MESSAGE, --list or --remove ID" in run(["announce", "--url", server]).output
    unknown = run(["announce", "hi", "--app", "nope", "--url", server])
    assert unknown.exit_code == 1 and "unknown app 'nope'" in unknown.output
    long = run(["announce", "x" * 501, "--url", server])
    assert long.exit_code == 1 and "422" in long.output


def test_kill_with_notice_is_listed_and_cancelled(server: str) -> None:  # noqa: F811
    sid = register(server, "sales")
    result = run(["kill", sid, "--in", "5m", "--reason", "deploy", "--url", server])
    assert result.exit_code == 0, result.output
    assert f"session {sid} will be killed: pending kill 1: at " in result.output and "(cancel-kill 1)" in result.output
    listed = run(["pending-kills", "--url", server])
    assert lines_of(listed)[0].split() == ["ID", "TARGET", "DEADLINE", "LEFT", "REASON", "BY"]
    assert lines_of(listed)[1].split()[:2] == ["1", sid] and "deploy" in lines_of(listed)[1]
    assert run(["cancel-kill", "1", "--url", server]).output == "pending kill 1 cancelled\n"
    assert not session(server, sid)["kill_requested"]
    assert lines_of(run(["pending-kills", "--url", server]))[-1] == "0 pending kill(s)"


def test_kill_all_with_notice_and_its_refusals(server: str) -> None:  # noqa: F811
    register(server, ODD_APP)
    register(server, ODD_APP)
    result = run(["kill-all", ODD_APP, "--at", "+10m", "--url", server])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"2 live session(s) of {ODD_APP} given notice: pending kill 1: at ")
    both = run(["kill-all", ODD_APP, "--in", "5m", "--at", "+10m", "--url", server])
    assert both.exit_code == 1 and "give --in or --at, not both" in both.output
    far = run(["kill-all", ODD_APP, "--in", "200h", "--url", server])
    assert far.exit_code == 1 and "422" in far.output
    assert len(httpx.get(f"{server}/pending-kills").json()["pending_kills"]) == 1
