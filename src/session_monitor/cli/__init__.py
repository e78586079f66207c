"""``session-monitor``: run the server, and list or kill sessions over HTTP.

Every flag has an environment twin (``SESSION_MONITOR_<FLAG>``); the admin
token is read from ``SESSION_MONITOR_ADMIN_TOKEN`` and never printed.
Commands live in ``serve`` (server and dashboard) and ``admin`` (the HTTP admin commands).
"""

from __future__ import annotations

import logging.config

import click

from session_monitor import defaults
from session_monitor._version import __version__
from session_monitor.cli import admin, lb_config, maintenance, notices
from session_monitor.cli import serve as serve_commands
from session_monitor.cli.options import _fail
from session_monitor.cli.serve import _dashboard_users
from session_monitor.logs import default_log_config

__all__ = ["_dashboard_users", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "SESSION_MONITOR"})
@click.version_option(__version__, prog_name="session-monitor")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """See, track and kill the live sessions of Panel apps."""
    logging.config.dictConfig(default_log_config(verbose))


for _command in (
    serve_commands.serve,
    serve_commands.dashboard,
    admin.list_sessions,
    admin.top,
    notices.kill,
    notices.kill_all,
    notices.pending_kills,
    notices.cancel_kill,
    notices.announce,
    admin.cleanup,
    maintenance.drain,
    maintenance.undrain,
    lb_config.lb_config,
):
    main.add_command(_command)


@main.command(name="setup-script")
def setup_script() -> None:
    """Print the path of the script that tracks every session of a ``panel serve``.

    Use: panel serve app.py --setup "$(session-monitor setup-script)"
    """
    from pathlib import Path

    click.echo(Path(__file__).resolve().parent.parent / "client" / "setup_hook.py")


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
