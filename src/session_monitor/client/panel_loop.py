"""The Panel side of loop health: the loop monitor on the IOLoop Panel serves on, and each session's work marked.

:func:`start` runs on the IOLoop (``client/panel.py`` calls it when a session's websocket is first watched).
It starts the probe and the stall watchdog (``loop_monitor``) with Panel's ``--num-threads`` pool, and wraps,
once per process, the two places Bokeh runs a session's work on the loop, so the watchdog can name the
session whose work blocks it (``client/loop.py``'s slot):

- ``ServerSession.with_document_locked``: every document callback of the session (next-tick, timeout and
  periodic callbacks, Panel's widget and event handlers, which Panel schedules as next-tick callbacks);
- ``ServerSession._handle_patch``: a patch from the browser being applied to the document.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import panel as pn
from bokeh.server.session import ServerSession
from tornado.ioloop import IOLoop

from session_monitor.client import loop as work
from session_monitor.client import loop_monitor

logger = logging.getLogger(__name__)

_hooked = False

PATCH_WORK = "bokeh.server.session.ServerSession._handle_patch"
"""The slot's function name while a browser patch is applied (the handlers it triggers run as callbacks)."""


def _panel_pool() -> Any:
    return pn.state._thread_pool


def start() -> None:
    """Start the process's loop monitor on the current IOLoop and mark sessions' work (once per process)."""
    hook_session_work()
    loop_monitor.install(IOLoop.current().asyncio_loop, pool=_panel_pool)  # type: ignore[attr-defined]


def hook_session_work() -> None:
    """Wrap Bokeh's dispatch of a session's work so :data:`session_monitor.client.loop.running` names it."""
    global _hooked
    if _hooked:
        return
    _hooked = True
    locked = ServerSession.with_document_locked
    patch = ServerSession._handle_patch

    def with_document_locked(self: ServerSession, func: Any, *args: Any, **kwargs: Any) -> Any:
        return locked(self, partial(work.call_for, str(self.id), func), *args, **kwargs)

    def _handle_patch(self: ServerSession, *args: Any, **kwargs: Any) -> Any:
        return work.ForSession(patch(self, *args, **kwargs), str(self.id), PATCH_WORK)  # type: ignore[arg-type]

    ServerSession.with_document_locked = with_document_locked  # type: ignore[method-assign]
    ServerSession._handle_patch = _handle_patch  # type: ignore[method-assign]
