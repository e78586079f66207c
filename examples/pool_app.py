"""Pool app: sessions share one pool of worker processes; killing a session stops only its jobs.

Run the monitor (``session-monitor serve``), then::

    panel serve examples/pool_app.py --num-procs 2

Every session of a server process shares that process's pool (``session_monitor.pool``; with
``--num-procs 2`` each process has its own). "Run jobs" queues jobs on it and shows them finish;
"Cancel" cancels this session's jobs; a kill from the dashboard cancels them too, within a second,
while other sessions' jobs go on. When the last session of the process leaves (or a kill-all), the
pool is shut down, and a new one starts with the next session that needs it.

Jobs run in other processes, so they must be importable there: they live in a module
(``session_monitor.pool.examples`` here), never in this script. The pool's state lives in the
imported ``session_monitor.pool`` module, never in this script's globals, which Panel clears when
a session ends.
"""

import asyncio
import os
from functools import partial

import panel as pn

from session_monitor import SessionClient, pool
from session_monitor.pool.examples import checks_every_cycle, cooperative_steps

APP_NAME = "pool_app"
KINDS = {
    "Cooperative: checks its cancel token": "cooperative",
    "Checks only every 5 s cycle: stopped by force": "cycles",
}

pn.extension(notifications=True)

tracker = SessionClient.get_tracker(app_name=APP_NAME)
jobs = pool.for_session(tracker)

count = pn.widgets.IntSlider(name="Jobs", start=1, end=8, value=4)
seconds = pn.widgets.IntSlider(name="Seconds per job", start=2, end=30, value=8)
kind = pn.widgets.RadioButtonGroup(name="Job kind", options=list(KINDS), value=next(iter(KINDS)))
run = pn.widgets.Button(name="Run jobs", button_type="primary")
cancel = pn.widgets.Button(name="Cancel", button_type="warning", disabled=True)
progress = pn.indicators.Progress(name="Progress", value=0, max=100, width=420)
status = pn.pane.Markdown("Idle.")
results = pn.pane.Markdown("")
about = pn.pane.Str("", styles={"color": "#666"})
pn.state.location.sync(count, {"value": "jobs"})  # ?jobs=2&seconds=4 presets a run (the tests use it)
pn.state.location.sync(seconds, {"value": "seconds"})


def describe_pool() -> None:
    state = pool.status()
    workers = f"{len(state.worker_pids)} workers" if state.running else "no pool running"
    about.object = (
        f"session {tracker.session_id} · process {os.getpid()} · {workers} · "
        f"{state.sessions} session(s) and {state.jobs} job(s) on it"
    )


async def on_run(_event: object) -> None:
    n, job_s, how = count.value, seconds.value, KINDS[kind.value]
    if how == "cooperative":
        submitted = [jobs.submit(cooperative_steps, i + 1, steps=job_s * 2, step_s=0.5) for i in range(n)]
    else:
        submitted = [jobs.submit(checks_every_cycle, i + 1, cycles=max(1, job_s // 5), cycle_s=5.0) for i in range(n)]
    run.disabled, cancel.disabled = True, False
    progress.value, results.object = 0, ""
    status.object = f"Running {n} job(s) on the shared pool…"
    describe_pool()
    finished: list[str] = []
    waits = [asyncio.ensure_future(_wait(job)) for job in submitted]
    try:
        with tracker.task(f"{n} pool jobs of {job_s} s"):
            for next_done in asyncio.as_completed(waits):
                finished.append(await next_done)
                progress.value = int(100 * len(finished) / n)
                results.object = "\n".join(f"- {line}" for line in finished)
                describe_pool()
        status.object = f"Done: {n} job(s) finished."
    except pool.JobCancelled as exc:
        jobs.cancel(exc.reason)  # the rest of this run too
        if jobs.closed:  # the session left the pool: killed (or ended)
            status.object = f"**Stopped: this session was ended by an administrator.** {exc.reason}."
        else:
            status.object = f"**Cancelled** after {len(finished)} of {n} job(s): {exc.reason}."
    finally:
        # Every job's outcome is taken, also of those a kill or a cancel stopped: none is left to be logged as
        # "Task exception was never retrieved" (and one still waited for is given up, which cancels its job).
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
        run.disabled, cancel.disabled = False, True
        describe_pool()


async def _wait(job: pool.Job) -> str:
    return str(await job)


def on_cancel(_event: object) -> None:
    jobs.cancel("cancelled by the user")


# Shown by a kill (on_kill runs before the page is told and closed). A bound method, not a function of this
# script: on_kill also runs when the session ends, after Panel cleared this script's globals.
tracker.on_kill(partial(status.param.update, object="**Stopped: this session was ended by an administrator.**"))
run.on_click(on_run)
cancel.on_click(on_cancel)
describe_pool()
pn.Column(
    "# Pool app",
    "Jobs of every session of this server process run on one shared pool of worker processes. "
    "Kill this session from the dashboard: its jobs stop within a second; other sessions' jobs go on.",
    pn.Row(count, seconds),
    kind,
    pn.Row(run, cancel),
    progress,
    status,
    results,
    about,
).servable(title="Pool app")
