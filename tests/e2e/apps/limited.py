"""A tracked app for the session-limit tests: it leaves a ``ran-<id>`` marker whenever its own code runs.

``?exempt=1`` marks the session exempt from idle culling and maximum age.
"""

import panel as pn
from tests.e2e.apps.markers import marker

from session_monitor import SessionClient

pn.extension()

tracker = SessionClient.get_tracker(app_name="limited")
marker("ran", tracker.session_id)
if pn.state.session_args.get("exempt"):
    tracker.exempt()
pn.Column("# Limited app", pn.pane.Str(f"session {tracker.session_id} user {tracker.user_id}")).servable()
