"""The Panel app ``benchmarks/tab_close.py`` serves: it writes the time its session was destroyed.

It imports nothing of ours: one server tracks it through ``--setup``, the other is plain Bokeh. The
callback binds what it uses as default arguments (Panel clears the script's globals before it runs).
"""

import os
import time
from functools import partial
from pathlib import Path

import panel as pn


def stamp(path: Path, _context: object, now=time.time, write=Path.write_text) -> None:
    write(path, repr(now()))


pn.extension()

session_id = pn.state.curdoc.session_context.id
pn.state.curdoc.on_session_destroyed(partial(stamp, Path(os.environ["TAB_CLOSE_STAMPS"], f"destroyed-{session_id}")))
pn.Column("# Tab close", pn.pane.Str(f"session {session_id}")).servable()
