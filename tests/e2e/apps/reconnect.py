"""A Panel app whose page reconnects after losing its websocket: a killed session must stay killed.

Every build of a session (the first one, and any the browser's reconnection causes) leaves a
``built-<ns>-<session id>`` marker, so a test can tell that the reconnection really happened.
"""

import time
from functools import partial

import panel as pn
from tests.e2e.apps import markers

from session_monitor import SessionClient

pn.extension(reconnect=True)

tracker = SessionClient.get_tracker(app_name="reconnect")
markers.marker(f"built-{time.time_ns()}", tracker.session_id)
tracker.on_kill(partial(markers.marker, "on_kill", tracker.session_id))
pn.state.curdoc.on_session_destroyed(markers.on_destroyed)
pn.Column("# Reconnecting app", pn.pane.Str(f"session {tracker.session_id}")).servable()
