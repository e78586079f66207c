"""A Panel app that enables no notifications: a kill must still tell the user why."""

import panel as pn

from session_monitor import SessionClient

pn.extension()

tracker = SessionClient.get_tracker(app_name="plain")
pn.Column("# Plain app", pn.pane.Str(f"session {tracker.session_id}")).servable()
