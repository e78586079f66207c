"""A Panel app that knows nothing of the monitor: ``panel serve --setup`` must track it all the same."""

import panel as pn

pn.extension()

session_id = pn.state.curdoc.session_context.id
pn.Column("# Untracked app", pn.pane.Str(f"session {session_id}"), pn.widgets.TextInput(name="Type here")).servable()
