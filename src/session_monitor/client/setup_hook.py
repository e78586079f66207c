"""Track every session of every app of a ``panel serve``, with no change to the apps.

Usage::

    panel serve app.py other.py --setup "$(session-monitor setup-script)"

``session-monitor setup-script`` prints the path of this file. Panel runs it once in every worker
process (after the fork with ``--num-procs``); it registers a ``pn.state.on_session_created`` hook
that makes a tracker for each new session: the app name is the app's URL path (``/sales/q3`` ->
``sales/q3``), the user is ``pn.state.user`` when Panel's authentication is on. An app that also calls
``SessionClient.get_tracker`` gets this same tracker, with the app's name and user.

Settings come from the environment of ``panel serve`` (``SESSION_MONITOR_URL``,
``SESSION_MONITOR_IDLE_TIMEOUT_S``, ...), as for any tracked app.
"""

from __future__ import annotations

import logging
from typing import Any

import panel as pn

from session_monitor.protocol import MAX_APP_NAME

logger = logging.getLogger(__name__)

ROOT_APP_NAME = "root"
"""App name of an app served at ``/``."""

_installed = False


def app_name_of(session_context: Any) -> str:
    """The app's name from its URL path: the route Bokeh serves it under, not the request's path.

    With ``--num-procs`` the session may be created by the websocket request (``/app/ws``).
    """
    url = None
    try:
        url = session_context.server_context.application_context.url
    except Exception:
        logger.debug("no application URL for session %s", getattr(session_context, "id", "?"), exc_info=True)
    name = str(url or "").strip("/")
    name = "".join(ch for ch in name if ch.isprintable())[:MAX_APP_NAME]
    return name or ROOT_APP_NAME


def _user() -> str | None:
    try:
        user = pn.state.user
    except Exception:
        return None
    return str(user) if user else None


def _session_created(session_context: Any) -> None:
    """Panel's hook, with ``pn.state.curdoc`` set to the new session's document: make its tracker."""
    from session_monitor.client.tracker import SessionClient

    try:
        tracker = SessionClient.get_tracker(app_name=app_name_of(session_context), user_id=_user())
        tracker._auto = True
    except Exception:  # never break the app's session over monitoring
        logger.exception("session %s: could not be tracked", getattr(session_context, "id", "?"))


def track_all_sessions() -> None:
    """Register the session-creation hook (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    pn.state.on_session_created(_session_created)
    from session_monitor.client.readiness import ready_port

    if ready_port() is not None:
        # Behind a load balancer: the readiness port answers, and the process is listed (so it can be
        # drained), from the start, before its first session.
        from session_monitor.client.agent import get_agent

        get_agent().start()


if __name__ == "panel_setup_module":  # run by ``panel serve --setup``: use the imported module's hook
    from session_monitor.client.setup_hook import track_all_sessions as _track_all_sessions

    _track_all_sessions()
