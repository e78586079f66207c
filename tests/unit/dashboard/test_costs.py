"""Cost cells of the Sessions tab and the leftovers cell of System status."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from session_monitor.dashboard import model
from session_monitor.dashboard.costs import COST_COLUMNS, cost_cells, leftovers_text
from session_monitor.dashboard.views import AGENT_COLUMNS, agent_row

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
COST = {
    "loop_seconds_total": 12.3456,
    "loop_seconds_1m": 2.0049,
    "pool_thread_seconds": 0.0,
    "callbacks_total": 42,
    "slowest_callback": {"qualname": "app.<b>on_click</b>", "duration_s": 2.004},
    "periodic_callbacks": 0,
    "doc_models": 87,
    "doc_data_bytes": 200_004_160,
    "threads_alive": 1,
    "pool_jobs": 0,
    "pool_cpu_seconds": None,
    "measured_at": "2026-01-01T12:00:00+00:00",
}


def _session(**extra: object) -> dict[str, object]:
    return {"session_id": "s1", "app_name": "a", "start_time": "2026-01-01T11:00:00+00:00", "state": "idle", **extra}


def test_cost_cells_are_numbers_that_sort_as_numbers_and_client_text_stays_text() -> None:
    row = model.session_row(_session(cost=COST), NOW)
    cells = dict(zip(model.COLUMNS, row, strict=True))
    assert [cells[c] for c in COST_COLUMNS] == [2.0, 12.35, 0.0, 42, "app.<b>on_click</b> (2 s)", 200.0, 1, 0]
    assert "slowest" in model.TEXT_COLUMNS  # shown through the escaping plaintext formatter


def test_a_session_not_measured_shows_empty_cost_cells() -> None:
    cells = cost_cells(_session())
    assert cells[4] == "" and all(math.isnan(v) for i, v in enumerate(cells) if i != 4)
    assert model.diff_rows({"s1": model.session_row(_session(), NOW)}, {"s1": model.session_row(_session(), NOW)}).empty


def test_leftovers_cell_names_threads_and_functions() -> None:
    agent = {
        "host": "h",
        "pid": 1,
        "leftovers": [
            {"session_id": "x", "kind": "thread", "name": "cruncher", "function": "workers.keep_crunching"},
            {"session_id": "x", "kind": "periodic_callback", "name": "periodic callback", "function": "app.tick"},
        ],
    }
    text = dict(zip(AGENT_COLUMNS, agent_row(agent, NOW), strict=True))["Leftovers"]
    assert text == (
        "2 leftovers: thread cruncher (workers.keep_crunching); periodic callback periodic callback (app.tick)"
    )
    assert leftovers_text({"leftovers": []}) == ""


def test_a_draining_process_shows_its_deadline_in_system_status() -> None:
    agent = {"host": "web-1", "pid": 1, "last_seen": NOW.isoformat(), "exited_at": None, "is_stale": False}
    status = dict(zip(AGENT_COLUMNS, agent_row(agent, NOW), strict=True))["Status"]
    assert status == "ok"
    drain = {"deadline": "2026-01-01T12:10:00+00:00", "message": "m", "started_at": NOW.isoformat(), "by": "ops"}
    status = dict(zip(AGENT_COLUMNS, agent_row({**agent, "drain": drain}, NOW), strict=True))["Status"]
    assert status == "draining until 12:10:00 UTC"
