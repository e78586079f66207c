"""A Panel app whose button blocks the IOLoop (the e2e tests of loop stalls serve it).

``?block=S`` sets how long the button's callback blocks (default 2 s).
"""

import time

import panel as pn

from session_monitor import SessionClient

tracker = SessionClient.get_tracker(app_name="blocking", user_id="e2e")
BLOCK_S = float((pn.state.session_args.get("block") or [b"2"])[0])


def block_the_loop(_event: object) -> None:
    time.sleep(BLOCK_S)  # the line the stall's stack must name


button = pn.widgets.Button(name="Block the loop", button_type="danger")
button.on_click(block_the_loop)
pn.Column("# Blocking app", pn.pane.Str(f"session {tracker.session_id}"), button).servable()
