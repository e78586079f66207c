"""The example apps (``examples/``) served by ``panel serve`` and used in headless Chromium.

The pool app's worker processes are children of its Panel process: "its jobs stopped" and "the pool
was shut down" are read from that process tree (psutil), and the other session's results from its page.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest
from panel.io.document import GC_DEBOUNCE
from playwright.sync_api import BrowserContext, Page
from tests.e2e.test_kill import notice, open_app, save_screenshot, settle_animations, wait_for_new_session
from tests.helpers import wait_until

if TYPE_CHECKING:
    from tests.e2e.conftest import Monitor, PanelServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCREENSHOTS = ROOT / "docs" / "screenshots"

WAIT_S = 60.0
"""Bound on waits for jobs and pages: worker processes start in seconds on a loaded 2-core machine."""
CLOSED_TAB_S = 60.0
"""Bound on a closed tab being noticed: fast detection takes seconds, Bokeh's own cleanup 15-32 s."""


def keep_screenshot(page: Page, name: str) -> None:
    """Save to ``artifacts/`` and, when missing or asked (``SESSION_MONITOR_UPDATE_SCREENSHOTS=1``), to the docs."""
    settle_animations(page)
    save_screenshot(page, name)
    target = SCREENSHOTS / name
    if not target.exists() or os.environ.get("SESSION_MONITOR_UPDATE_SCREENSHOTS"):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "artifacts" / name, target)


UNRETRIEVED = re.compile(r"(Task|Future) exception was never retrieved")
"""What asyncio logs when a task or future that failed (a job cancelled by a kill) is freed unawaited."""


def assert_no_unretrieved_exceptions(panel: PanelServer, killed_at: float) -> None:
    """The app's log has no "exception was never retrieved", once Panel's garbage collection after the kill ran.

    asyncio logs it when such a task is freed; the killed session's tasks are freed by the ``gc.collect()``
    Panel schedules :data:`GC_DEBOUNCE` seconds after destroying a session, so the log is read after that.
    """
    time.sleep(max(0.0, killed_at + GC_DEBOUNCE + 2.0 - time.monotonic()))  # waits for that collection
    log = panel.log_path.read_text(errors="replace")
    found = UNRETRIEVED.search(log)
    assert found is None, f"the app logged {found.group(0)!r}:\n{log[found.start() : found.start() + 1500]}"


def pool_workers(panel: PanelServer) -> list[psutil.Process]:
    """The pool's processes under the Panel server: its workers and aiomultiprocess's manager (both spawned)."""
    found = []
    for child in psutil.Process(panel.pid).children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in command and "resource_tracker" not in command:
            found.append(child)
    return found


def open_pool_app(context: BrowserContext, panel: PanelServer, monitor: Monitor, query: str) -> tuple[Page, str]:
    known = {s["session_id"] for s in monitor.sessions(app="pool_app")}
    page = context.new_page()
    page.goto(f"{panel.app_url('pool_app')}?{query}")
    page.get_by_text("session ").first.wait_for()
    return page, wait_for_new_session(monitor, "pool_app", known)


def test_killing_one_pool_session_stops_only_its_jobs(monitor, panel_server, context):
    panel = panel_server(str(EXAMPLES / "pool_app.py"), env={"SESSION_MONITOR_POOL_SIZE": "2"})
    doomed, doomed_id = open_pool_app(context, panel, monitor, "jobs=2&seconds=30")
    other, other_id = open_pool_app(context, panel, monitor, "jobs=2&seconds=3")

    doomed.get_by_role("button", name="Run jobs").click()
    wait_until(lambda: monitor.session(doomed_id)["status"] == "running", timeout_s=WAIT_S)
    wait_until(lambda: len(pool_workers(panel)) >= 2, timeout_s=WAIT_S)
    other.get_by_role("button", name="Run jobs").click()  # queued behind the doomed session's two jobs
    wait_until(lambda: monitor.session(other_id)["status"] == "running", timeout_s=WAIT_S)
    assert monitor.session(doomed_id)["current_task"] == "2 pool jobs of 30 s"

    monitor.kill(doomed_id, reason="runaway jobs")
    killed_at = time.monotonic()

    notice(doomed, "runaway jobs").wait_for(timeout=WAIT_S * 1000)
    wait_until(lambda: monitor.ended_as(doomed_id) == "killed", timeout_s=WAIT_S)
    # The other session's jobs ran on the workers the killed session's jobs left: they were stopped.
    other.get_by_text("Done: 2 job(s) finished.").wait_for(timeout=WAIT_S * 1000)
    assert other.get_by_text("job 2: 6 steps done").is_visible()
    assert monitor.ended_as(other_id) is None
    doomed.get_by_text("Stopped: this session was ended by an administrator").wait_for()
    keep_screenshot(doomed, "pool-app-killed.png")
    assert_no_unretrieved_exceptions(panel, killed_at)
    keep_screenshot(other, "pool-app.png")


def test_a_closed_tab_cancels_its_jobs_and_the_last_one_stops_the_pool(monitor, panel_server, context):
    panel = panel_server(str(EXAMPLES / "pool_app.py"), env={"SESSION_MONITOR_POOL_SIZE": "2"})
    page, sid = open_pool_app(context, panel, monitor, "jobs=2&seconds=30")
    page.get_by_role("button", name="Run jobs").click()
    wait_until(lambda: monitor.session(sid)["status"] == "running", timeout_s=WAIT_S)
    workers = wait_until(lambda: (found := pool_workers(panel)) and len(found) >= 2 and found, timeout_s=WAIT_S)

    page.close()

    wait_until(lambda: monitor.ended_as(sid) is not None, timeout_s=CLOSED_TAB_S)
    _gone, alive = psutil.wait_procs(workers, timeout=WAIT_S)
    assert not alive, f"pool workers left after the session ended: {alive}"
    assert pool_workers(panel) == []


def test_task_runner_shows_progress_and_why_it_was_killed(monitor, panel_server, context):
    panel = panel_server(str(EXAMPLES / "task_runner.py"))
    known = {s["session_id"] for s in monitor.sessions(app="task_runner")}
    page = open_app(context, panel, "task_runner")
    sid = wait_for_new_session(monitor, "task_runner", known)

    page.get_by_role("button", name="Run task").click()
    page.get_by_text("Step 3 of 20 done.").wait_for(timeout=WAIT_S * 1000)
    running = wait_until(lambda: (s := monitor.session(sid))["status"] == "running" and s, timeout_s=WAIT_S)
    assert running["current_task"] == "20 steps of 0.5 s"
    assert [s["session_id"] for s in monitor.sessions(app="task_runner")] == [sid]  # the thread found its session
    keep_screenshot(page, "task-runner.png")

    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Cancelled after").wait_for()
    wait_until(lambda: monitor.session(sid)["status"] == "idle", timeout_s=WAIT_S)

    page.get_by_role("button", name="Run task").click()
    page.get_by_text("Step 2 of 20 done.").wait_for(timeout=WAIT_S * 1000)
    monitor.kill(sid, reason="maintenance window")
    killed_at = time.monotonic()
    notice(page, "maintenance window").wait_for(timeout=WAIT_S * 1000)
    page.get_by_text("Stopped: this session was ended by an administrator").wait_for()
    wait_until(lambda: monitor.ended_as(sid) == "killed", timeout_s=WAIT_S)
    keep_screenshot(page, "task-runner-killed.png")
    assert_no_unretrieved_exceptions(panel, killed_at)
