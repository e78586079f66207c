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
    def work() -> None:
        worker = SessionClient.get_tracker(app_name="tracked")  # from a thread the callback started
        with worker.task("crunching numbers"):
            time.sleep(30)

    threading.Thread(target=work, daemon=True).start()
    status.object = "started"


button = pn.widgets.Button(name="Run task", button_type="primary")
button.on_click(run_task)
pn.Column("# Tracked app", pn.pane.Str(f"session {tracker.session_id}"), button, status).servable()
