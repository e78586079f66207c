"""The Panel side of loop health: the loop monitor on the IOLoop Panel serves on.

:func:`start` runs on the IOLoop (``client/panel.py`` calls it when a session's websocket is first watched).
It starts the probe and the stall watchdog (``loop_monitor``) with Panel's ``--num-threads`` pool. Which
session's work the loop runs is marked by the cost accounting's wrappers of Bokeh's dispatch
(``dispatch.py``, the only wrappers of it), in the slot of ``loop.py`` that the watchdog reads.
"""

from __future__ import annotations

from typing import Any

import panel as pn
from tornado.ioloop import IOLoop

from session_monitor.client import dispatch, loop_monitor


def _panel_pool() -> Any:
    return pn.state._thread_pool


def start() -> None:
    """Start the process's loop monitor on the current IOLoop (once per process); sessions' work is marked."""
    dispatch.install()
    loop_monitor.install(IOLoop.current().asyncio_loop, pool=_panel_pool)  # type: ignore[attr-defined]
