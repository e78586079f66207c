"""The one "current work" slot: set by the cost accounting's dispatch wrappers, read by the stall watchdog.

Bokeh's dispatch is wrapped once (``dispatch.py``); the watchdog names the session and function of a real
Bokeh session's blocking callback from that slot, locked and ``nolock`` alike.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from bokeh.document import Document
from bokeh.document.locking import without_document_lock
from bokeh.models import Div  # type: ignore[attr-defined]
from bokeh.server.session import ServerSession
from bokeh.util.token import generate_session_id
from tornado.ioloop import IOLoop

import session_monitor.client.panel  # noqa: F401  (installs the dispatch wrappers, as a Panel app does)
from session_monitor.client import cost, dispatch, loop, panel_loop
from session_monitor.client.loop_monitor import LoopMonitor
from session_monitor.protocol import Stall

WRAPPED = ("with_document_locked", "_wrap_document_callback", "_handle_patch", "_handle_push", "_handle_pull")


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    dispatch.install()
    cost.reset()
    yield
    cost.reset()


def blocking_callback() -> None:
    time.sleep(0.7)


@without_document_lock
async def nolock_blocking_callback() -> None:
    time.sleep(0.7)


def test_bokeh_dispatch_is_wrapped_once() -> None:
    dispatch.install()
    dispatch.install()
    counts = Counter((owner, name) for owner, name, _ in dispatch._originals)
    assert all(n == 1 for n in counts.values()), counts
    assert {name for owner, name in counts if owner is ServerSession} >= set(WRAPPED)
    # Bokeh's per-callback wrapper is its own (no second hook marks sessions' work).
    assert ServerSession._wrap_session_callback.__module__ == "bokeh.server.session"
    assert not hasattr(ServerSession._wrap_session_callback, "__wrapped__")
    assert not hasattr(panel_loop, "hook_session_work")


@pytest.mark.parametrize("callback", [blocking_callback, nolock_blocking_callback], ids=["locked", "nolock"])
async def test_the_watchdog_names_a_bokeh_sessions_blocking_callback(callback: object) -> None:
    monitor = LoopMonitor(asyncio.get_running_loop(), stall_s=0.3)
    monitor.start()
    try:
        busy, quiet = Document(), Document()
        busy.add_root(Div())
        quiet.add_root(Div())
        sid = generate_session_id()
        ServerSession(sid, busy, IOLoop.current())
        ServerSession(generate_session_id(), quiet, IOLoop.current())
        quiet.add_next_tick_callback(lambda: None)
        busy.add_next_tick_callback(callback)  # type: ignore[arg-type]
        await asyncio.sleep(1.2)
        stalls = [Stall.model_validate(s) for s in monitor.watchdog.take().stalls]
    finally:
        monitor.stop()
    assert stalls, "the 0.7 s block was not caught"
    first = stalls[0]
    assert first.session_id == sid
    assert first.function is not None and first.function.endswith(callback.__qualname__)  # type: ignore[attr-defined]
    assert first.stack and first.stack[0].function.endswith("blocking_callback")
    assert loop.running() is None
    meter = cost.find(sid)
    assert meter is not None and meter.loop_ns >= 600_000_000
