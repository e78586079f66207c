"""Options and the error exit shared by the commands."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from session_monitor import defaults

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
