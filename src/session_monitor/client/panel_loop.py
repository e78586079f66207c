"""The Panel side of loop health: the loop monitor on the IOLoop Panel serves on, and each session's work marked.

:func:`start` runs on the IOLoop (``client/panel.py`` calls it when a session's websocket is first watched).
It starts the probe and the stall watchdog (``loop_monitor``) with Panel's ``--num-threads`` pool, and wraps,
once per process, the two places Bokeh runs a session's work on the loop, so the watchdog can name the
session whose work blocks it (``client/loop.py``'s slot):

- ``ServerSession._wrap_session_callback``: every callback of the session's document (next-tick, timeout
  and periodic callbacks, including Panel's widget and event handlers and its ``nolock`` async ones, which
  Panel schedules as next-tick callbacks), named after the callback itself;
- ``ServerSession.with_document_locked``: work run with the document locked outside those (Bokeh's
  ``session_context.with_locked_document``);
- ``ServerSession._handle_patch``: a patch from the browser being applied to the document (Panel runs a
  widget's handlers right there when the document is not busy).
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
    wrap = ServerSession._wrap_session_callback

    def _wrap_session_callback(self: ServerSession, callback: Any) -> Any:
        wrapped = wrap(self, callback)
        inner, sid, name = wrapped._callback, str(self.id), work.qualname(callback.callback)
        wrapped._callback = partial(work.call_named, sid, name, inner)
        return wrapped

    def with_document_locked(self: ServerSession, func: Any, *args: Any, **kwargs: Any) -> Any:
        return locked(self, partial(work.call_for, str(self.id), func), *args, **kwargs)

    def _handle_patch(self: ServerSession, *args: Any, **kwargs: Any) -> Any:
        return work.ForSession(patch(self, *args, **kwargs), str(self.id), PATCH_WORK)  # type: ignore[arg-type]

    ServerSession.with_document_locked = with_document_locked  # type: ignore[method-assign]
    ServerSession._handle_patch = _handle_patch  # type: ignore[method-assign]
    ServerSession._wrap_session_callback = _wrap_session_callback  # type: ignore[method-assign]
