"""Formatting and diffing of the dashboard's session rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from session_monitor.dashboard import model
from session_monitor.store.stats import OTHER_APPS, count_timeline

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def api_session(sid: str = "s1", **fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "session_id": sid,
        "app_name": "reports",
        "user_id": "ada",
        "host": "web-1",
        "pid": 42,
        "state": "idle",
        "status": "idle",
        "current_task": None,
        "task_started_at": None,
        "kill_requested": False,
        "start_time": (NOW - timedelta(minutes=5)).isoformat(),
        "last_heartbeat": (NOW - timedelta(seconds=3)).isoformat(),
    }
    base.update(fields)
    return base


def cell(row: tuple[object, ...], column: str) -> object:
    return row[model.COLUMNS.index(column)]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, ""), (math.nan, ""), (-3, "0s"), (42.9, "42s"), (60, "1m"), (3599, "59m"), (3725, "1h02m"),
     (2 * 86400 + 4 * 3600 + 59, "2d04h")],
)  # fmt: skip
def test_durations_are_coarse_after_the_first_minute(seconds: float | None, text: str) -> None:
    assert model.fmt_duration(seconds) == text


def test_heartbeat_bands_only_change_at_their_bounds() -> None:
    assert model.seen_band(0) == (0, "< 15s ago") == model.seen_band(14.9)
    assert model.seen_band(15) == (15, "< 30s ago")
    assert model.seen_band(45) == (30, "< 60s ago")
    assert model.seen_band(150) == (120, "2m ago")
    assert model.seen_band(7300) == (7200, "2h ago")


def test_a_row_shows_placement_state_and_task() -> None:
    row = model.session_row(
        api_session(
            state="running",
            status="running",
            current_task="<b>report</b>",
            task_started_at=(NOW - timedelta(seconds=75)).isoformat(),
        ),
        NOW,
    )
    assert cell(row, "host") == "web-1:42"
    assert cell(row, "state") == "running"
    assert cell(row, "task") == "<b>report</b>"  # kept as text: the table's plaintext formatter escapes it
    assert (cell(row, "task_for"), cell(row, "duration"), cell(row, "last_seen")) == ("1m", "5m", "< 15s ago")
    assert cell(row, "started") == "2026-01-01 11:55:00"


def test_states_are_words_from_a_closed_alphabet() -> None:
    assert cell(model.session_row(api_session(kill_requested=True), NOW), "state") == "killing"
    for odd in ("<img src=x>", "Idle", "", None, 3):
        assert cell(model.session_row(api_session(state=odd), NOW), "state") == "unknown"
    assert cell(model.session_row(api_session(state="busy-2"), NOW), "state") == "busy-2"
    html = model.state_html()
    assert set(html) == set(model.STATES) and all("<script" not in v for v in html.values())


def test_visibility_and_idle_are_shown_when_known() -> None:
    row = model.session_row(api_session(visibility="hidden", idle_seconds=130), NOW)
    assert (cell(row, "visibility"), cell(row, "idle")) == ("hidden", "2m")
    row = model.session_row(api_session(visibility="<i>x</i>"), NOW)
    assert (cell(row, "visibility"), cell(row, "idle")) == ("", "")


def test_a_session_that_is_only_alive_does_not_change_its_row() -> None:
    before = model.rows_by_id([api_session()], NOW)
    later = NOW + timedelta(seconds=5)
    after = model.rows_by_id([api_session(last_heartbeat=later.isoformat())], later)
    assert model.diff_rows(before, after).empty


def test_diff_finds_added_removed_and_changed_cells() -> None:
    old = model.rows_by_id([api_session("a"), api_session("b"), api_session("c")], NOW)
    new = model.rows_by_id(
        [api_session("d"), api_session("a", user_id="bob"), api_session("c", state="running", status="running")],
        NOW,
    )
    diff = model.diff_rows(old, new)
    assert diff.added == ["d"] and diff.removed == ["b"]
    assert diff.changed == {
        "a": {model.COLUMNS.index("user"): "bob"},
        "c": {model.COLUMNS.index("state"): "running"},
    }
    assert diff.cells == 2 and not diff.empty


def test_app_counts_are_sorted_by_name() -> None:
    rows = model.rows_by_id([api_session("1", app_name="b"), api_session("2", app_name="A"), api_session("3")], NOW)
    assert model.app_counts(rows.values()) == {"A": 1, "b": 1, "reports": 1}


def test_timeline_counts_sessions_live_at_each_time() -> None:
    t = [NOW - timedelta(minutes=m) for m in (3, 2, 1, 0)]
    spans = [
        ("a", NOW - timedelta(minutes=10), None),
        ("a", NOW - timedelta(minutes=150), NOW - timedelta(minutes=2)),  # ended exactly at t[1]
        ("b", NOW - timedelta(seconds=30), None),
    ]
    assert count_timeline(spans, t, max_apps=5) == {"a": [2, 1, 1, 1], "b": [0, 0, 0, 1]}
    assert count_timeline(spans, t, max_apps=1) == {"a": [2, 1, 1, 1], OTHER_APPS: [0, 0, 0, 1]}


def test_the_renderer_reuses_parses_of_unchanged_sessions_and_agrees_with_session_row() -> None:
    renderer = model.RowRenderer()
    same, changing = api_session("same"), api_session("changing")
    first = renderer.rows_by_id([same, changing], NOW)
    assert first == model.rows_by_id([same, changing], NOW)
    later = NOW + timedelta(minutes=3)
    changed = api_session("changing", user_id="bob")
    agent_seen = {"agent-1": later.isoformat()}
    second = renderer.rows_by_id([same, changed], later, agent_seen)
    assert second == model.rows_by_id([same, changed], later, agent_seen)
    assert cell(second["changing"], "user") == "bob"
    assert cell(second["same"], "duration") == "8m"  # time-dependent cells move even when the parse is reused


def test_the_agents_last_sync_stands_in_for_the_heartbeat_and_idle_counts_from_the_interaction() -> None:
    s = api_session(agent_id="agent-1", last_interaction_at=(NOW - timedelta(seconds=200)).isoformat())
    old_beat = model.session_row(s, NOW + timedelta(minutes=5))
    fresh = model.session_row(s, NOW + timedelta(minutes=5), {"agent-1": (NOW + timedelta(minutes=5)).isoformat()})
    assert (cell(old_beat, "last_seen"), cell(fresh, "last_seen")) == ("5m ago", "< 15s ago")
    assert cell(fresh, "idle") == "8m"


def test_a_page_nobody_touched_is_idle_since_it_opened() -> None:
    row = model.session_row(api_session(visibility="visible"), NOW)
    assert cell(row, "idle") == "5m"
    assert cell(model.session_row(api_session(), NOW), "idle") == ""  # no page report: unknown


def test_bidi_and_invisible_controls_are_shown_and_the_original_comes_back() -> None:
    from session_monitor.dashboard.safe import from_visible, visible_controls

    cases = {
        "admin\u202etxt.exe": "admin⟨U+202E⟩txt.exe",
        "a\u2066b\u2069\u200e\u200f\u061c": "a⟨U+2066⟩b⟨U+2069⟩⟨U+200E⟩⟨U+200F⟩⟨U+061C⟩",
        "zero\u200bwidth\ufeff\u2060\u00ad": "zero⟨U+200B⟩width⟨U+FEFF⟩⟨U+2060⟩⟨U+00AD⟩",
        "line\u2028para\u2029": "line⟨U+2028⟩para⟨U+2029⟩",
        "⟨U+202E⟩": "⟨U+27E8⟩U+202E⟩",  # a name spelling the marker itself stays distinct
        "José 张伟 مريم": "José 张伟 مريم",
        "👨\u200d👩\u200d👧 می\u200cخواهم": "👨\u200d👩\u200d👧 می\u200cخواهم",  # joiners are ordinary writing
    }
    for raw, shown in cases.items():
        assert visible_controls(raw) == shown
        assert from_visible(shown) == raw
    shown_forms = {visible_controls(raw) for raw in cases}
    assert len(shown_forms) == len(cases)


def test_rows_show_client_text_with_its_controls_visible() -> None:
    now = datetime.now(UTC)
    s = {"session_id": "s1", "app_name": "pay\u202eroll", "user_id": "\u2067eve", "current_task": "t\u200b",
         "host": "h\u202d", "pid": 1, "state": "idle", "status": "idle", "start_time": now.isoformat()}  # fmt: skip
    row = dict(zip(model.COLUMNS, model.session_row(s, now), strict=True))
    assert row["app"] == "pay⟨U+202E⟩roll" and row["user"] == "⟨U+2067⟩eve"
    assert row["task"] == "t⟨U+200B⟩" and row["host"] == "h⟨U+202D⟩:1"
