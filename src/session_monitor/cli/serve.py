"""``session-monitor serve`` and ``dashboard``: the server, and the dashboard beside it or alone."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

import click

from session_monitor import defaults
from session_monitor.cli.options import TOKEN_OPTION, _fail
from session_monitor.logs import default_log_config


@click.command()
@click.option("--host", envvar="SESSION_MONITOR_HOST", default=defaults.API_HOST, show_default=True)
@click.option("--port", envvar="SESSION_MONITOR_PORT", default=defaults.API_PORT, show_default=True, type=int)
@click.option(
    "--database-url",
    envvar="SESSION_MONITOR_DATABASE_URL",
    default=None,
    help="sqlite:///PATH or postgresql://USER@HOST/DB  [default: SQLite under ./data]",
)
@click.option(
    "--insecure", envvar="SESSION_MONITOR_INSECURE", is_flag=True, help="Allow a non-loopback bind without tokens."
)
@click.option(
    "--dashboard-port",
    envvar="SESSION_MONITOR_DASHBOARD_PORT",
    default=defaults.DASHBOARD_PORT,
    show_default=True,
    type=click.IntRange(min=0, max=65535),
    help="Also serve the dashboard on this port (a child process); 0: no dashboard.",
)
@click.option(
    "--workers",
    envvar="SESSION_MONITOR_WORKERS",
    default=1,
    show_default=True,
    type=click.IntRange(min=1, max=64),
    help="Server processes sharing this port (PostgreSQL only): replicas of one database.",
)
def serve(host: str, port: int, database_url: str | None, insecure: bool, dashboard_port: int, workers: int) -> None:
    """Run the REST API server (and the dashboard beside it)."""
    try:
        import uvicorn

        from session_monitor.server import Settings, create_app
    except ImportError as exc:
        _fail(
            str(exc)
            if "extra" in str(exc)
            else f"{exc}; the server needs the [server] extra: pip install 'panel-session-monitor[server]'"
        )
    from pydantic import ValidationError

    overrides: dict[str, Any] = {"host": host, "port": port, "insecure": insecure}
    if database_url:
        overrides["database_url"] = database_url
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"SESSION_MONITOR_{str(e['loc'][0]).upper()}" + "".join(f"[{p!r}]" for p in e["loc"][1:]) + f": {e['msg']}"
            if e["loc"]
            else str(e["msg"]).removeprefix("Value error, ")
            for e in exc.errors()
        )
        _fail(f"invalid setting: {problems}", code=2)
    problem = settings.bind_problem()
    if problem:
        _fail(problem, code=2)
    from session_monitor.errors import ConfigError
    from session_monitor.store.engine import normalize_url

    try:  # a bad URL would otherwise surface as a traceback from the app's startup
        dialect = normalize_url(settings.resolved_database_url).get_backend_name()
    except ConfigError as exc:
        _fail(str(exc), code=2)
    if workers > 1 and dialect != "postgresql":
        _fail("--workers above 1 needs PostgreSQL: SQLite is one process's database", code=2)
    if settings.admin_token is None:
        logging.getLogger(__name__).warning(
            "no SESSION_MONITOR_ADMIN_TOKEN: anyone who can reach %s:%d can kill sessions", host, port
        )
    child = _start_dashboard(host, port, dashboard_port, insecure) if dashboard_port else None
    try:
        if workers > 1:
            # Each worker builds its own app (its own pools, LISTEN connection and reaper bid) from the
            # environment, so the options given here go there too.
            os.environ.update(
                {
                    f"SESSION_MONITOR_{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v)
                    for k, v in overrides.items()
                }
            )
            verbose = logging.getLogger("session_monitor").getEffectiveLevel() <= logging.DEBUG
            uvicorn.run(
                "session_monitor.server.app:create_app",
                factory=True,
                workers=workers,
                host=host,
                port=port,
                log_config=default_log_config(verbose),
                access_log=False,
                timeout_graceful_shutdown=5,
                timeout_keep_alive=int(defaults.SERVER_KEEP_ALIVE_S),
            )
        else:
            uvicorn.run(
                create_app(settings),
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=5,
                timeout_keep_alive=int(defaults.SERVER_KEEP_ALIVE_S),
            )
    finally:
        if child is not None:
            _stop_child(child)


def _start_dashboard(host: str, port: int, dashboard_port: int, insecure: bool) -> subprocess.Popen[bytes]:
    """``session-monitor dashboard`` as a child process pointed at this server; it inherits the environment."""
    api_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    api_url = f"http://{'[' + api_host + ']' if ':' in api_host else api_host}:{port}"
    command = [sys.executable, "-m", "session_monitor", "dashboard", "--api-url", api_url]
    command += ["--port", str(dashboard_port), "--host", host, "--exit-with-parent", str(os.getpid())]
    command += ["--insecure"] if insecure else []
    child = subprocess.Popen(command)
    logging.getLogger(__name__).info("dashboard starting (pid %d) on port %d", child.pid, dashboard_port)
    return child


def _stop_child(child: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """Stop the dashboard we started, by its PID: SIGTERM, then SIGKILL if it does not exit in time."""
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=timeout_s)


@click.command()
@click.option(
    "--api-url",
    envvar="SESSION_MONITOR_URL",
    default=defaults.SERVER_URL,
    show_default=True,
    help="Base URL of the monitor server's REST API.",
)
@click.option("--host", envvar="SESSION_MONITOR_DASHBOARD_HOST", default=defaults.API_HOST, show_default=True)
@click.option(
    "--port",
    envvar="SESSION_MONITOR_DASHBOARD_PORT",
    default=defaults.DASHBOARD_PORT,
    show_default=True,
    type=click.IntRange(min=1, max=65535),
)
@TOKEN_OPTION
@click.option(
    "--insecure", envvar="SESSION_MONITOR_INSECURE", is_flag=True, help="Allow a non-loopback bind without a login."
)
@click.option(
    "--oauth-provider",
    envvar="SESSION_MONITOR_DASHBOARD_OAUTH_PROVIDER",
    default=None,
    help="Log in through Panel's OAuth (github, google, azure, generic, ...); key, secret and redirect URI from "
    "Panel's PANEL_OAUTH_KEY, PANEL_OAUTH_SECRET, PANEL_OAUTH_REDIRECT_URI.",
)
@click.option("--exit-with-parent", type=int, default=None, hidden=True, help="Exit when this parent process is gone.")
def dashboard(
    api_url: str,
    host: str,
    port: int,
    admin_token: str | None,
    insecure: bool,
    oauth_provider: str | None,
    exit_with_parent: int | None,
) -> None:
    """Serve the dashboard (sessions, system status, history, audit, policies, plots) over the REST API.

    Login (Panel's basic auth): SESSION_MONITOR_DASHBOARD_USERS ('{"alice": "secret"}',
    '{"bob": {"password": "...", "role": "operator", "apps": ["sales"]}}' or the path of such a JSON file) or
    SESSION_MONITOR_DASHBOARD_PASSWORD (any name, that password); or Panel's OAuth (--oauth-provider). A login is
    required when the admin token is set, and for a non-loopback bind unless --insecure. Roles of signed-in users:
    SESSION_MONITOR_DASHBOARD_ROLES (see the docs' Dashboard page).
    """
    from session_monitor.dashboard.roles import RoleMap, users_file_entries
    from session_monitor.errors import ConfigError
    from session_monitor.server.settings import is_loopback

    entries = _dashboard_users(os.environ.get("SESSION_MONITOR_DASHBOARD_USERS"))
    try:
        users, file_roles = users_file_entries(entries or {})
        roles = RoleMap.parse(os.environ.get("SESSION_MONITOR_DASHBOARD_ROLES"), file_roles)
    except ConfigError as exc:
        _fail(str(exc), code=2)
    password = os.environ.get("SESSION_MONITOR_DASHBOARD_PASSWORD") or None
    if (admin_token or not (is_loopback(host) or insecure)) and not (users or password or oauth_provider):
        why = "the admin token is set" if admin_token else f"{host} is not a loopback address"
        _fail(
            f"the dashboard needs a login because {why}: set SESSION_MONITOR_DASHBOARD_USERS "
            "(JSON name → password) or SESSION_MONITOR_DASHBOARD_PASSWORD",
            code=2,
        )
    from session_monitor.dashboard import serve_dashboard

    if exit_with_parent is not None:
        _exit_with_parent(exit_with_parent)

    serve_dashboard(
        api_url,
        admin_token=admin_token,
        port=port,
        host=host,
        users=users or None,
        password=password,
        cookie_secret=os.environ.get("SESSION_MONITOR_DASHBOARD_COOKIE_SECRET") or None,
        roles=roles,
        oauth_provider=oauth_provider,
    )


def _exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Even if ``serve`` is SIGKILLed, the dashboard it started goes away within ``poll_s``."""
    import signal
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _dashboard_users(value: str | None) -> dict[str, Any] | None:
    """``{"name": "password" or {"password", "role", "apps"}}`` from JSON text or from a JSON file at that path."""
    if not value:
        return None
    try:
        if not value.lstrip().startswith("{") and os.path.isfile(value):
            with open(value, encoding="utf-8") as f:
                value = f.read()
        users = json.loads(value)
    except (OSError, ValueError) as exc:
        _fail(f"SESSION_MONITOR_DASHBOARD_USERS: not a JSON object of name → password ({exc})", code=2)
    if not isinstance(users, dict) or not all(isinstance(v, str | dict) for v in users.values()):
        _fail("SESSION_MONITOR_DASHBOARD_USERS: must be a JSON object of name → password (or {password, role})", code=2)
    return users
