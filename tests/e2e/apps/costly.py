"""A tracked Panel app whose sessions cost what a test asks: loop time, document data, leftover threads."""

import threading
import time

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import panel as pn
from tests.e2e.apps import workers

from session_monitor import SessionClient

pn.extension("tabulator")

tracker = SessionClient.get_tracker(app_name="costly", user_id="e2e")
status = pn.pane.Str("ready", name="status")
layout = pn.Column("# Costly app", pn.pane.Str(f"session {tracker.session_id}"), status)


def block_two_seconds(_event: object) -> None:
    """Holds whatever runs it (the IOLoop, or a pool thread under --num-threads) for 2 s."""
    time.sleep(2.0)
    status.object = f"blocked {_event.new}"  # type: ignore[attr-defined]


def load_data(_event: object) -> None:
    """Puts a 200 MB DataFrame (25 float64 columns of 1,000,000 rows) into a Tabulator, one page shown."""
    frame = pd.DataFrame(np.ones((1_000_000, 25)), columns=[f"c{i}" for i in range(25)])
    layout.append(pn.widgets.Tabulator(frame, pagination="remote", page_size=10, height=200))
    status.object = "loaded"


def start_thread(_event: object) -> None:
    threading.Thread(target=workers.keep_crunching, name="cruncher", daemon=True).start()
    status.object = "thread started"


for label, handler in (("Block", block_two_seconds), ("Load data", load_data), ("Start thread", start_thread)):
    button = pn.widgets.Button(name=label)
    button.on_click(handler)
    layout.append(button)
layout.servable()
