"""The Panel app ``benchmarks/kill_latency.py`` serves: its ``on_kill`` writes the time it ran.

The callback binds everything it uses as default arguments, so it needs none of this script's
globals (Panel clears them before ``on_session_destroyed``).
"""

import os
import time
from functools import partial
from pathlib import Path

import panel as pn

from session_monitor import SessionClient


def stamp(path: Path, now=time.time, write=Path.write_text) -> None:
    write(path, repr(now()))


pn.extension(notifications=True)

tracker = SessionClient.get_tracker(app_name="kill-bench")
tracker.on_kill(partial(stamp, Path(os.environ["KILL_BENCH_STAMPS"], f"on_kill-{tracker.session_id}")))
pn.Column("# Kill latency", pn.pane.Str(f"session {tracker.session_id}")).servable()
