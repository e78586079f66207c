# mypy: disable-error-code="no-untyped-call"
# Panel's widgets and panes are untyped (param-based); their constructors and methods are called throughout.
"""``create_dashboard(api_url)``: the monitor dashboard as a Panel app, and ``serve_dashboard`` to run it.

It talks to the server only through the REST API. The admin token stays in this process: the browser gets
rendered rows, never the token (with a token, the page is behind Panel's basic-auth login, and the logged-in
name is sent to the server as the actor of every kill).
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

import panel as pn

from session_monitor.dashboard.client import ApiClient, SessionFeed
from session_monitor.dashboard.config_view import ConfigView
from session_monitor.dashboard.handlers import guard_autoload
from session_monitor.dashboard.notices_view import NoticesView
from session_monitor.dashboard.plots import PlotsView
from session_monitor.dashboard.policies_view import PoliciesView
from session_monitor.dashboard.roles import NO_ACCESS, RoleMap, role_text
from session_monitor.dashboard.safe import escaped, visible_controls
from session_monitor.dashboard.sessions_view import SessionsView
from session_monitor.dashboard.stalls_view import AGENT_LOOP_COLUMNS, StallsView, agent_loop_row
from session_monitor.dashboard.tabs import LazyTabs
from session_monitor.dashboard.views import (
    AUDIT_COLUMNS,
    HISTORY_COLUMNS,
    RecordsView,
    audit_row,
    history_row,
)

logger = logging.getLogger(__name__)

TITLE = "Session monitor"
SESSIONS_REFRESH_S = 1.0
"""The sessions tab refreshes every second, so a change shows within the 2 s the issue asks for."""
OTHER_REFRESH_S = 5.0
"""System status, history and audit refresh this often."""
PLOTS_REFRESH_S = 15.0
STALLS_REFRESH_S = 0.5
"""The Stalls tab looks at the newest stall this often (one small request), so a stall shows within 3 s."""


def _actor() -> str:
    user = pn.state.user
    return str(user) if user else "dashboard"


def create_dashboard(
    api_url: str,
    admin_token: str | None = None,
    *,
    page_size: int = 50,
    refresh_s: float = SESSIONS_REFRESH_S,
    client: ApiClient | None = None,
    roles: RoleMap | None = None,
) -> Callable[[], pn.viewable.Viewable]:
    """The dashboard app: call the result once per browser page (``pn.serve`` does).

    Args:
        api_url: Base URL of the monitor server's REST API.
        admin_token: Sent to the API as a bearer token; never rendered into the page.
        page_size: Rows per page of the sessions table (50).
        refresh_s: Seconds between two refreshes of the sessions table (1).
        client: An :class:`ApiClient` to use instead of one made from ``api_url`` (tests).
        roles: Signed-in users → roles (:mod:`~session_monitor.dashboard.roles`); without it, every user is an
            admin (as before roles).
    """
    role_map = roles or RoleMap()
    api = client or ApiClient(api_url, admin_token)
    feed = SessionFeed(api, max_age_s=refresh_s * 0.9)

    def page() -> pn.viewable.Viewable:
        actor = _actor()
        role = role_map.role_for(pn.state.user, pn.state.user_info)
        if role == NO_ACCESS:
            return pn.pane.HTML(
                f"<h2>{TITLE}</h2><p>{escaped(visible_controls(actor))} has no role on this dashboard: ask its "
                "administrator for one. <a href='/logout'>Log out</a></p>"
            )
        sessions = SessionsView(api, feed, actor=actor, page_size=page_size, role=role)
        agents = RecordsView(
            "System status",
            AGENT_LOOP_COLUMNS,
            api.agents,
            agent_loop_row,
            help_text="One row per Panel process (agent); loop lag and busy share over its last sync interval.",
            stale_column="Status",
        )
        stalls = StallsView(api)
        history = RecordsView("History", HISTORY_COLUMNS, api.history, history_row)
        audit = RecordsView("Audit", AUDIT_COLUMNS, api.audit, audit_row)
        policies = PoliciesView(api.policies)
        plots = PlotsView(api)
        notices = NoticesView(
            api, actor=actor, apps=lambda: list(sessions.kill_app.options.values()), limited=role.apps is not None
        )
        config = ConfigView(api, actor=actor)

        async def refresh_others() -> None:
            for view in (agents, history, audit, config) if role.is_admin else (agents, history):
                await view.refresh()
            await policies.refresh()
            if role.can_kill:
                await notices.refresh()

        async def refresh_plots() -> None:
            latest = feed.latest.data["sessions"] if feed.latest else None
            await plots.refresh(latest)

        # The audit log is the admins' (the API's GET /audit is admin-only; the page's token must not widen it).
        shown = [
            ("Sessions", sessions.panel()),
            ("System status", agents.panel()),
            ("Stalls", stalls.panel()),
            *([("Notices", notices.panel())] if role.can_kill else []),  # announcements and kills with notice
            ("History", history.panel()),
            *([("Audit", audit.panel())] if role.is_admin else []),
            ("Policies", policies.panel()),
            *([("Config", config.panel())] if role.is_admin else []),  # shared config: the admins' from here
            ("Plots", plots.panel()),
        ]
        tabs = LazyTabs(shown, sizing_mode="stretch_width").tabs  # each tab built when first opened
        who = pn.pane.HTML(
            f"signed in as <b>{escaped(visible_controls(actor))}</b> ({escaped(role_text(role))}) · "
            "<a href='/logout'>log out</a>"
            if pn.state.user
            else "",
            align="end",
        )
        header = pn.Row(pn.pane.HTML(f"<h2 style='margin:4px 0'>{TITLE}</h2>"), pn.Spacer(), who)
        layout = pn.Column(header, tabs, sizing_mode="stretch_width", margin=(0, 12))

        def start() -> None:
            # Panel runs async periodic callbacks on the server's loop (its stub only admits sync ones).
            periodic = ((sessions.refresh, refresh_s), (refresh_others, OTHER_REFRESH_S),
                        (refresh_plots, PLOTS_REFRESH_S), (stalls.refresh, STALLS_REFRESH_S))  # fmt: skip
            for callback, period_s in periodic:
                pn.state.add_periodic_callback(callback, period=int(period_s * 1000))  # type: ignore[arg-type]
            pn.state.execute(sessions.refresh)
            pn.state.execute(stalls.refresh)
            pn.state.execute(refresh_others)
            pn.state.execute(refresh_plots)

        pn.state.onload(start)
        layout.dashboard = sessions  # type: ignore[attr-defined]  # reachable for tests and benchmarks
        layout.config_view = config  # type: ignore[attr-defined]
        return layout

    return page


EXIT_GRACE_S = 5.0
"""After SIGTERM, the most the dashboard waits for its exit hooks before leaving anyway (it holds no state)."""


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    # The SystemExit lands in whatever the main thread runs; a callback that catches BaseException (seen under
    # heavy load: the first SIGTERM was lost) must not keep the process alive, so a timer ends it regardless.
    timer = threading.Timer(EXIT_GRACE_S, os._exit, args=(128 + signum,))
    timer.daemon = True
    timer.start()
    raise SystemExit(128 + signum)


def serve_dashboard(
    api_url: str,
    *,
    admin_token: str | None = None,
    port: int = 5000,
    host: str = "127.0.0.1",
    users: Mapping[str, str] | None = None,
    password: str | None = None,
    cookie_secret: str | None = None,
    allowed_origins: list[str] | None = None,
    roles: RoleMap | None = None,
    oauth_provider: str | None = None,
    **kwargs: Any,
) -> None:
    """Serve the dashboard with Panel's own (Tornado) server until interrupted; blocks.

    With ``users`` (name → password) or a shared ``password`` (any name), the page needs a login (Panel's basic
    auth); with ``oauth_provider`` (Panel's ``--oauth-provider``: ``github``, ``azure``, ``generic``, ...; its key,
    secret and redirect come from Panel's ``PANEL_OAUTH_*`` variables) the login is that provider's. The signed-in
    name is the actor in the audit log, and ``roles`` gives each user a role.
    """
    pn.extension("tabulator", notifications=True)
    guard_autoload()
    auth: Any = dict(users) if users else password
    origins = {f"127.0.0.1:{port}", f"localhost:{port}", f"{host}:{port}", *(allowed_origins or [])}
    options: dict[str, Any] = {}
    if oauth_provider:
        options["oauth_provider"] = oauth_provider
    elif auth:
        options["basic_auth"] = auth
    if oauth_provider or auth:
        options["cookie_secret"] = cookie_secret or secrets.token_urlsafe(32)
    logger.info(
        "dashboard on http://%s:%d/ using the API at %s%s",
        host,
        port,
        api_url,
        " (login)" if auth or oauth_provider else "",
    )
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (from `serve`, or an init system) ends the process through its exit hooks, like Ctrl-C.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    pn.serve(
        {"/": create_dashboard(api_url, admin_token, roles=roles)},
        port=port,
        address=host,
        websocket_origin=sorted(origins),
        show=False,
        verbose=False,
        title=TITLE,
        **options,
        **kwargs,
    )
