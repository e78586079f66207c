"""Per-session cost: the meters and their 1-minute window, Bokeh's dispatch timed per session, document sizes,
the cost put on session records, and leftovers of ended sessions."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import panel as pn
import pytest
from bokeh.core.types import ID
from bokeh.document import Document
from bokeh.models import ColumnDataSource, Div  # type: ignore[attr-defined]
from bokeh.server.session import ServerSession
from tornado.ioloop import IOLoop

from session_monitor.client import cost, dispatch, loop, threads
from session_monitor.client.docsize import Sizer, size_document
from session_monitor.client.leftovers import LeftoverWatch
from session_monitor.client.sessions import SessionRecord, SessionTable
from session_monitor.client.usage import Usage, periodic_callbacks

S = 1_000_000_000


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    dispatch.install()
    cost.reset()
    yield
    cost.reset()


def on_click() -> None:
    time.sleep(0.05)


def test_meter_window_keeps_only_the_last_minute() -> None:
    meter = cost.Meter("s")
    meter.add(2 * S, 100 * S, on_click)
    meter.add(S // 2, 130 * S, partial(on_click))
    assert meter.loop_ns_window(130 * S) == 2 * S + S // 2
    assert meter.loop_ns_window(159 * S) == 2 * S + S // 2
    assert meter.loop_ns_window(160 * S) == S // 2  # the 2 s of second 100 left the window
    meter.add(S, 190 * S, on_click)  # second 190 lands on bucket 10 again: its old value is replaced
    assert meter.loop_ns_window(190 * S) == S
    assert meter.loop_ns == 3 * S + S // 2 and meter.callbacks == 3


def test_snapshot_names_the_slowest_callback_through_partials_and_wrappers() -> None:
    meter = cost.Meter("s")
    meter.add(10, 1, lambda: None)
    meter.add(2 * S, 2, partial(partial(on_click)))
    meter.add_thread(S, on_click)
    snap = meter.snapshot()
    assert snap["slowest_callback"] == {"qualname": f"{__name__}.on_click", "duration_s": 2.0}
    assert snap["loop_seconds_total"] == 2.0 and snap["pool_thread_seconds"] == 1.0
    assert snap["callbacks_total"] == 3
    assert isinstance(meter.slowest, str)  # the callable is not kept once named


async def _serve(doc: Document, sid: str) -> ServerSession:
    return ServerSession(ID(sid), doc, IOLoop.current())


async def test_document_callbacks_and_coroutine_steps_are_timed_for_their_session() -> None:
    doc, other = Document(), Document()
    doc.add_root(Div())
    other.add_root(Div())
    await _serve(doc, "busy")
    await _serve(other, "quiet")
    seen: list[object] = []

    def blocking() -> None:
        seen.append(loop.running())
        time.sleep(0.2)

    async def stepping() -> None:
        time.sleep(0.1)
        await asyncio.sleep(0.3)  # awaiting is nobody's work
        time.sleep(0.1)

    doc.add_next_tick_callback(blocking)
    doc.add_next_tick_callback(stepping)  # type: ignore[arg-type]
    other.add_next_tick_callback(lambda: None)
    await asyncio.sleep(0.8)
    busy, quiet = cost.find("busy"), cost.find("quiet")
    assert busy is not None and quiet is not None
    assert 0.4 <= busy.loop_ns / S < 0.6, busy.loop_ns
    assert quiet.loop_ns / S < 0.05
    assert busy.callbacks == 2  # a coroutine's steps count as one callback
    running = seen[0]
    assert isinstance(running, tuple) and running[0] == "busy" and running[1].endswith(".blocking")
    assert loop.running() is None


async def test_executor_jobs_submitted_in_a_dispatch_are_timed_as_pool_work() -> None:
    doc = Document()
    doc.add_root(Div())
    await _serve(doc, "pooled")
    pool = ThreadPoolExecutor(max_workers=2)
    futures = []
    doc.add_next_tick_callback(lambda: futures.append(pool.submit(time.sleep, 0.3)))
    await asyncio.sleep(0.1)
    meter = cost.find("pooled")
    assert meter is not None and list(meter.jobs.values()) == ["time.sleep"]
    await asyncio.wrap_future(futures[0])
    pool.shutdown()
    assert meter.pool_ns / S >= 0.29 and not meter.jobs


async def test_periodic_callbacks_are_listed() -> None:
    doc = Document()
    await _serve(doc, "ticking")
    doc.add_periodic_callback(on_click, 10_000)
    assert [cost.qualname(fn) for fn in periodic_callbacks("ticking")] == [f"{__name__}.on_click"]
    assert periodic_callbacks("unknown") == []


@pytest.mark.filterwarnings("ignore:The inplace keyword:DeprecationWarning")  # Panel's Tabulator, on pandas 3.1
def test_document_size_counts_each_buffer_once() -> None:
    frame = pd.DataFrame(np.ones((100_000, 10)), columns=[f"c{i}" for i in range(10)])  # 8 MB
    doc = Document()
    doc.add_root(pn.widgets.Tabulator(frame).get_root(doc))  # its source holds views of the frame's block
    size = size_document(doc)
    assert 8_000_000 <= size.data_bytes <= 9_000_000, size
    assert size.models > 10

    strings = pd.DataFrame({"s": [f"value {i}" for i in range(50_000)]})
    doc2 = Document()
    doc2.add_root(ColumnDataSource({"x": list(range(10_000))}))
    doc2.add_root(pn.pane.DataFrame(strings).get_root(doc2))
    deep = int(strings.memory_usage(deep=True).sum())
    assert 0.8 * deep < size_document(doc2).data_bytes - 80_000 < 1.5 * deep


def test_sizer_keeps_to_its_budget_and_resumes() -> None:
    docs = {}
    for i in range(3):
        doc = Document()
        doc.add_root(ColumnDataSource({"x": np.ones(1000)}))
        docs[f"s{i}"] = doc
    sizer = Sizer(budget_s=0.0)  # one document per pass
    assert list(sizer.measure(docs)) == ["s0"]
    assert sorted(sizer.measure(docs)) == ["s0", "s1"]
    assert sorted(sizer.measure(docs)) == ["s0", "s1", "s2"]
    del docs["s1"]
    assert sorted(sizer.measure(docs)) == ["s0", "s2"]


def test_costs_go_on_records_when_they_changed() -> None:
    table = SessionTable()
    table.track(SessionRecord("s", "app", None, datetime.now(UTC)), lambda _reason: None)
    table.batch_sent(table.take_batch(exiting=False), resync=False)
    base = {"loop_seconds_total": 1.0, "pool_thread_seconds": 0.0, "measured_at": "t1"}
    table.apply_costs({"s": base})
    batch = table.take_batch(exiting=False)
    table.batch_sent(batch, resync=False)
    assert batch.sessions[0]["cost"] == base
    table.apply_costs({"s": {**base, "measured_at": "t2"}})  # only the time of measuring changed
    assert not table.pending
    table.apply_costs({"s": {"loop_seconds_total": 1.01, "pool_thread_seconds": 0.0}}, timings_only=True)
    assert not table.pending  # grew less than TIMING_CHANGE_S
    table.apply_costs({"s": {"loop_seconds_total": 3.0, "pool_thread_seconds": 0.0}}, timings_only=True)
    assert table.take_batch(exiting=False).sessions[0]["cost"] == {**base, "loop_seconds_total": 3.0}


def test_usage_reports_threads_carrying_the_session_key() -> None:
    threads.install()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="worker")
    threads._local.key = "keyed"
    try:
        thread.start()
    finally:
        threads._local.key = None
    try:
        found = Usage().costs(["keyed", "other"])
        assert found["keyed"]["threads_alive"] == 1 and found["other"]["threads_alive"] == 0
        assert found["keyed"]["doc_models"] is None  # no document known for it
    finally:
        stop.set()
        thread.join()


def _keyed_thread(key: str, target: object) -> threading.Thread:
    thread = threading.Thread(target=target, name="left-behind")  # type: ignore[arg-type]
    threads._local.key = key
    try:
        thread.start()
    finally:
        threads._local.key = None
    return thread


def test_leftovers_are_flagged_after_the_delay_logged_once_and_dropped_when_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    threads.install()
    stop = threading.Event()
    thread = _keyed_thread("ended", stop.wait)
    cost.meter("ended")
    cost.meter("clean")
    table = SessionTable()
    for sid in ("ended", "clean"):
        table.track(SessionRecord(sid, "app", None, datetime.now(UTC)), lambda _reason: None)
        table.end(sid, "closed")
    watch = LeftoverWatch(lambda _sid: [], dict, check_after_s=10.0)
    now = time.monotonic()
    assert not watch.due(now) and not watch.check(now)
    assert watch.check(now + 10.5)
    assert [(x["session_id"], x["kind"], x["name"]) for x in watch.current] == [("ended", "thread", "left-behind")]
    assert watch.current[0]["function"] == "threading.Event.wait"
    assert cost.find("clean") is None  # nothing left behind: forgotten
    assert not watch.check(now + 12)  # unchanged
    warnings = [r for r in caplog.records if "left a thread running" in r.getMessage()]
    assert len(warnings) == 1 and "ended" in warnings[0].getMessage()
    stop.set()
    thread.join()
    assert watch.check(now + 13) and watch.current == []
    assert cost.find("ended") is None


def test_a_forgotten_session_is_not_metered_again_until_it_lives_again() -> None:
    cost.meter("gone").add(S, S, on_click)
    cost.mark_ended("gone")
    cost.forget("gone")
    late = cost.meter("gone")
    late.add(S, S, on_click)
    assert cost.find("gone") is None  # a late callback after the end is counted nowhere
    cost.revive("gone")  # re-created under its id (reconnect)
    revived = cost.meter("gone")
    assert cost.find("gone") is revived and revived.ended_at is None
