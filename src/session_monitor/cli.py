"""``session-monitor``: run the server, and list or kill sessions over HTTP.

Every flag has an environment twin (``SESSION_MONITOR_<FLAG>``); the admin
token is read from ``SESSION_MONITOR_ADMIN_TOKEN`` and never printed.
"""

from __future__ import annotations

import json
import logging.config
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import quote

import click
import httpx

from session_monitor import defaults
from session_monitor._version import __version__
from session_monitor.logs import default_log_config

URL_OPTION = click.option(
    "--url",
    envvar="SESSION_MONITOR_URL",
    default=defaults.SERVER_URL,
    show_default=True,
    help="Base URL of the monitor server.",
)
TOKEN_OPTION = click.option(
    "--admin-token",
    envvar="SESSION_MONITOR_ADMIN_TOKEN",
    default=None,
    show_default=False,
    help="Admin token (prefer the environment variable; it is never printed).",
)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _request(method: str, url: str, path: str, token: str | None, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, headers=headers, timeout=defaults.HTTP_TIMEOUT_S, **kwargs
        )
    except httpx.TimeoutException:
        _fail(f"the server at {url} did not answer within {defaults.HTTP_TIMEOUT_S:g} s")
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the session monitor at {url}: {exc}")
    if response.is_success:
        return response.json()
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    hint = ""
    if response.status_code == 401:
        hint = " (set SESSION_MONITOR_ADMIN_TOKEN)"
    _fail(f"the server refused ({response.status_code}): {detail}{hint}")


def _ago(value: str | None, now: datetime) -> str:
    if not value:
        return "-"
    seconds = (now - datetime.fromisoformat(value)).total_seconds()
    return _duration(seconds) + " ago"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _table(rows: Sequence[Sequence[str]], headers: Sequence[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _clean(text: str | None, limit: int = 40) -> str:
    """Client-provided text, made safe for a terminal (no escape sequences) and cut to ``limit``."""
    if text is None:
        return "-"
    safe = "".join(ch if ch.isprintable() else "?" for ch in text)
    return safe if len(safe) <= limit else safe[: limit - 1] + "…"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "SESSION_MONITOR"})
@click.version_option(__version__, prog_name="session-monitor")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """See, track and kill the live sessions of Panel apps."""
    logging.config.dictConfig(default_log_config(verbose))


@main.command()
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
            f"SESSION_MONITOR_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
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


@main.command()
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
@click.option("--exit-with-parent", type=int, default=None, hidden=True, help="Exit when this parent process is gone.")
def dashboard(
    api_url: str, host: str, port: int, admin_token: str | None, insecure: bool, exit_with_parent: int | None
) -> None:
    """Serve the dashboard (sessions, system status, history, audit, plots) over the REST API.

    Login (Panel's basic auth): SESSION_MONITOR_DASHBOARD_USERS ('{"alice": "secret"}' or the path of such a
    JSON file) or SESSION_MONITOR_DASHBOARD_PASSWORD (any name, that password). A login is required when the
    admin token is set, and for a non-loopback bind unless --insecure.
    """
    from session_monitor.server.settings import is_loopback

    users = _dashboard_users(os.environ.get("SESSION_MONITOR_DASHBOARD_USERS"))
    password = os.environ.get("SESSION_MONITOR_DASHBOARD_PASSWORD") or None
    if (admin_token or not (is_loopback(host) or insecure)) and not (users or password):
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
        users=users,
        password=password,
        cookie_secret=os.environ.get("SESSION_MONITOR_DASHBOARD_COOKIE_SECRET") or None,
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


def _dashboard_users(value: str | None) -> dict[str, str] | None:
    """``{"name": "password"}`` from JSON text or from a JSON file at that path."""
    if not value:
        return None
    try:
        if not value.lstrip().startswith("{") and os.path.isfile(value):
            with open(value, encoding="utf-8") as f:
                value = f.read()
        users = json.loads(value)
    except (OSError, ValueError) as exc:
        _fail(f"SESSION_MONITOR_DASHBOARD_USERS: not a JSON object of name → password ({exc})", code=2)
    if not isinstance(users, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in users.items()):
        _fail("SESSION_MONITOR_DASHBOARD_USERS: must be a JSON object of name → password", code=2)
    return users


@main.command(name="ls")
@URL_OPTION
@TOKEN_OPTION
@click.option("--app", default=None, help="Only this app.")
@click.option(
    "--status",
    type=click.Choice(["idle", "running", "disconnected", "stale"]),
    default=None,
    help="Only sessions in this state.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
def list_sessions(url: str, admin_token: str | None, app: str | None, status: str | None, as_json: bool) -> None:
    """List live sessions."""
    params = {k: v for k, v in {"app": app, "status": status}.items() if v is not None}
    data = _request("GET", url, "/sessions", admin_token, params=params)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    now = datetime.now().astimezone()
    rows = [
        [
            s["session_id"][:12],
            _clean(s["app_name"], 30),
            _clean(s.get("user_id"), 20),
            _clean(f"{s.get('host') or '-'}:{s.get('pid') or '-'}", 28),
            s["state"] + (" (kill requested)" if s.get("kill_requested") else ""),
            _clean(s.get("current_task"), 30),
            _duration(s.get("task_seconds")),
            _duration(s["duration_seconds"]),
            _ago(s["last_heartbeat"], now),
        ]
        for s in data["sessions"]
    ]
    headers = ["SESSION", "APP", "USER", "HOST:PID", "STATE", "TASK", "TASK FOR", "AGE", "LAST SEEN"]
    click.echo(_table(rows, headers))
    click.echo(f"{data.get('total', len(rows))} live session(s)")


@main.command()
@URL_OPTION
@TOKEN_OPTION
@click.option("--app", default=None, help="Only this app.")
@click.option("--interval-s", type=click.FloatRange(min=0.2), default=2.0, show_default=True, help="Refresh period.")
@click.option(
    "--sort", type=click.Choice(["l", "t", "p", "m", "c"]), default="l", show_default=True, help="First sort key."
)
@click.option("--once", is_flag=True, help="Print one frame and exit (no terminal needed).")
def top(url: str, admin_token: str | None, app: str | None, interval_s: float, sort: str, once: bool) -> None:
    """Live sessions sorted by what they cost (loop time, pool time, document data, callbacks), like top."""
    from session_monitor import top as top_view

    fetch = top_view.api_fetch(url, admin_token, app, timeout_s=defaults.HTTP_TIMEOUT_S)
    if once:
        try:
            rows, leftovers = fetch()
        except top_view.FetchError as exc:
            _fail(str(exc))
        top_view.print_frame(rows, sort, leftovers=leftovers)
        return
    top_view.run(fetch, interval_s=interval_s, sort=sort)


@main.command()
@URL_OPTION
@TOKEN_OPTION
@click.option("--reason", default=None, help="Why; shown to the user and kept in the audit log.")
@click.argument("session_id")
def kill(url: str, admin_token: str | None, reason: str | None, session_id: str) -> None:
    """Kill one session."""
    body = {"reason": reason} if reason else None
    _request("POST", url, f"/sessions/{quote(session_id, safe='')}/kill", admin_token, json=body)
    click.echo(f"kill requested for session {session_id}")


@main.command(name="kill-all")
@URL_OPTION
@TOKEN_OPTION
@click.option("--reason", default=None, help="Why; shown to the users and kept in the audit log.")
@click.argument("app_name")
def kill_all(url: str, admin_token: str | None, reason: str | None, app_name: str) -> None:
    """Kill every live session of an app."""
    body = {"reason": reason} if reason else None
    data = _request("POST", url, f"/apps/{quote(app_name, safe='')}/kill-all", admin_token, json=body)
    click.echo(f"kill requested for {data['killed_count']} session(s) of {app_name}")


@main.command()
@URL_OPTION
@TOKEN_OPTION
@click.option(
    "--older-than-minutes",
    default=defaults.CLEANUP_OLDER_THAN_MINUTES,
    show_default=True,
    type=click.IntRange(min=1),
    help="End sessions silent for longer than this.",
)
def cleanup(url: str, admin_token: str | None, older_than_minutes: int) -> None:
    """End sessions without a heartbeat for a while (as ``expired``)."""
    data = _request("DELETE", url, "/sessions/stale", admin_token, params={"older_than_minutes": older_than_minutes})
    click.echo(f"ended {data['deleted_count']} silent session(s)")


@main.command(name="setup-script")
def setup_script() -> None:
    """Print the path of the script that tracks every session of a ``panel serve``.

    Use: panel serve app.py --setup "$(session-monitor setup-script)"
    """
    from pathlib import Path

    click.echo(Path(__file__).resolve().parent / "client" / "setup_hook.py")


@main.command()
@click.option("--port", default=defaults.API_PORT, show_default=True, type=click.IntRange(1, 65535), help="REST API.")
@click.option("--dashboard-port", default=defaults.DASHBOARD_PORT, show_default=True, type=click.IntRange(1, 65535))
@click.option("--task-runner-port", default=5006, show_default=True, type=click.IntRange(1, 65535))
@click.option("--pool-app-port", default=5007, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--data-dir",
    default=defaults.DATA_DIR,
    show_default=True,
    type=click.Path(file_okay=False),
    help="Folder of the demo's SQLite database.",
)
def demo(port: int, dashboard_port: int, task_runner_port: int, pool_app_port: int, data_dir: str) -> None:
    """Run the server, the dashboard and both example apps (pool app with --num-procs 2); Ctrl-C stops all.

    Everything listens on 127.0.0.1 only.
    """
    from session_monitor.demo import DemoPorts, run_demo

    try:
        run_demo(DemoPorts(port, dashboard_port, task_runner_port, pool_app_port), data_dir)
    except RuntimeError as exc:
        _fail(str(exc))
