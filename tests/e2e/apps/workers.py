"""Work the test apps start on threads, in an importable module: Panel clears a served script's globals when
its session is destroyed, and a thread running a function of the script would fail then."""

from __future__ import annotations

import time


def keep_crunching() -> None:
    """A worker thread that outlives its session (the leftover the monitor must flag); stops after 60 s."""
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        time.sleep(0.2)
