"""A Panel app in a template (``FastListTemplate``), untouched by the monitor: a kill must grey it and disable its
widgets as it does a plain page."""

import panel as pn

pn.extension()

session_id = pn.state.curdoc.session_context.id
template = pn.template.FastListTemplate(title="Template app")
template.sidebar.append(pn.widgets.Select(name="Region", options=["north", "south"]))
template.sidebar.append(pn.widgets.TextInput(name="Filter"))
template.main.append(pn.Column(pn.pane.Str(f"session {session_id}"), pn.widgets.Button(name="Refresh")))
template.servable()
