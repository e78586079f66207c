"""A Panel app tracked with SessionClient, as an app author would write it (the e2e tests serve it)."""

import threading
import time
from functools import partial

import panel as pn
from tests.e2e.apps import markers

from session_monitor import SessionClient

pn.extension(notifications=True)

tracker = SessionClient.get_tracker(app_name="tracked", user_id="e2e")
tracker.on_kill(partial(markers.marker, "on_kill", tracker.session_id))
pn.state.curdoc.on_session_destroyed(markers.on_destroyed)

status = pn.pane.Str("idle", name="status")


def run_task(_event: object) -> None:
    callback_done = threading.Event()

    def work() -> None:
        # Only once the callback has returned does Panel no longer know the session on any thread:
        # the tracker must still be found, through the thread the callback started.
        callback_done.wait(5)
        time.sleep(0.3)
        worker = SessionClient.get_tracker(app_name="tracked")
        with worker.task("crunching numbers"):
            time.sleep(30)

    threading.Thread(target=work, daemon=True).start()
    status.object = "started"
    callback_done.set()


button = pn.widgets.Button(name="Run task", button_type="primary")
button.on_click(run_task)
pn.Column("# Tracked app", pn.pane.Str(f"session {tracker.session_id}"), button, status).servable()
