"""``session-monitor drain`` and ``undrain``: take Panel processes out of a load balancer for a deploy."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import click

from session_monitor.cli.admin import _clean, _request
from session_monitor.cli.options import TOKEN_OPTION, URL_OPTION, _fail

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h30m`` -> seconds (> 0)."""
    match = _DURATION.match(text.strip().lower())
    if not text.strip() or match is None:
        raise click.BadParameter(f"{text!r}: give seconds, or a duration such as 20s, 10m or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise click.BadParameter(f"{text!r}: must be more than 0 s")
    return total


def _target(process: str | None, host: str | None, app: str | None) -> dict[str, Any]:
    given = [x for x in (process, host, app) if x is not None]
    if len(given) != 1:
        _fail("give one target: HOST:PID, --host HOST or --app APP")
    if app is not None:
        return {"app": app}
    if host is not None:
        return {"host": host}
    assert process is not None
    name, sep, pid = process.rpartition(":")
    if not sep or not name or not pid.isdigit():
        _fail(f"{process!r}: give the process as HOST:PID (see session-monitor ls or the dashboard's System status)")
    return {"host": name, "pid": int(pid)}


def _print(data: dict[str, Any], verb: str) -> None:
    for p in data["processes"]:
        drain = p.get("drain")
        until = f" until {datetime.fromisoformat(drain['deadline']):%Y-%m-%d %H:%M:%S %Z}" if drain else ""
        click.echo(f"{verb} {_clean(p['host'], 60)}:{p['pid']}{until}")
    click.echo(f"{data['count']} process(es) {verb}")


TARGET_ARG = click.argument("process", required=False, metavar="[HOST:PID]")
HOST_OPTION = click.option("--host", default=None, help="Every live Panel process of this host.")
APP_OPTION = click.option("--app", default=None, help="Every live Panel process with a live session of this app.")


@click.command()
@URL_OPTION
@TOKEN_OPTION
@TARGET_ARG
@HOST_OPTION
@APP_OPTION
@click.option("--deadline", default="10m", show_default=True, help="When the sessions end as drained: 20s, 10m, 1h30m.")
@click.option("--at", "at", default=None, help="Or an ISO 8601 time with its offset (2026-12-01T18:00+01:00).")
@click.option("--message", default=None, help="Shown to the users with the countdown (text, at most 500).")
def drain(
    url: str,
    admin_token: str | None,
    process: str | None,
    host: str | None,
    app: str | None,
    deadline: str,
    at: str | None,
    message: str | None,
) -> None:
    """Drain Panel processes: no new sessions from the load balancer; the open ones see MESSAGE and a
    countdown, and end as drained at the deadline."""
    body = _target(process, host, app)
    if at is not None:
        body["at"] = at
    else:
        body["deadline_s"] = parse_duration(deadline)
    if message is not None:
        body["message"] = message
    _print(_request("POST", url, "/drain", admin_token, json=body), "drained")


@click.command()
@URL_OPTION
@TOKEN_OPTION
@TARGET_ARG
@HOST_OPTION
@APP_OPTION
def undrain(url: str, admin_token: str | None, process: str | None, host: str | None, app: str | None) -> None:
    """Make drained Panel processes take new sessions again; their countdowns go away."""
    _print(_request("POST", url, "/undrain", admin_token, json=_target(process, host, app)), "undrained")
