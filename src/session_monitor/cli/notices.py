"""The kill and notice commands over HTTP: ``kill`` and ``kill-all`` (now, or with notice: ``--in``, ``--at``),
``pending-kills``, ``cancel-kill`` and ``announce`` (post, list, remove)."""

from __future__ import annotations

import json
import re
from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import quote

import click

from session_monitor.cli.admin import _clean, _duration, _request, _table
from session_monitor.cli.options import TOKEN_OPTION, URL_OPTION, _fail

_DURATION = re.compile(r"^\+?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h30m``, ``2m30s`` -> seconds (over 0)."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise click.BadParameter(f"{text!r} is not a duration such as 30s, 5m or 1h30m")
    hours, minutes, seconds = match.groups()
    total = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)
    if total <= 0:
        raise click.BadParameter("must be longer than 0 s")
    return total


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """A time: ``18:05`` (local, its next occurrence), an ISO 8601 date-time (local if naive), or ``+5m``."""
    now = now or datetime.now().astimezone()
    value = text.strip()
    if value.startswith("+"):
        return now + timedelta(seconds=parse_duration(value))
    try:
        clock = time.fromisoformat(value)
    except ValueError:
        pass
    else:
        at = datetime.combine(now.date(), clock.replace(tzinfo=None)).astimezone()
        return at if at > now else at + timedelta(days=1)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a time such as 18:05, 2026-12-01T18:05 or +5m") from None
    return at if at.tzinfo is not None else at.astimezone()


def _local(value: str | None) -> str:
    return "-" if not value else datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def notice_body(reason: str | None, delay: str | None, at: str | None) -> dict[str, Any] | None:
    """The kill body: ``reason``, and ``delay_s`` (``--in``) or ``at`` (``--at``) for a kill with notice."""
    if delay and at:
        _fail("give --in or --at, not both")
    body: dict[str, Any] = {}
    if reason:
        body["reason"] = reason
    if delay:
        body["delay_s"] = parse_duration(delay)
    if at:
        body["at"] = parse_when(at).isoformat()
    return body or None


IN_OPTION = click.option(
    "--in", "delay", default=None, metavar="DURATION", help="Give notice: a countdown, the kill after this (30s, 5m)."
)
AT_OPTION = click.option(
    "--at", "at", default=None, metavar="TIME", help="Give notice: the kill at this time (18:05, ISO 8601, +5m)."
)


@click.command()
@URL_OPTION
@TOKEN_OPTION
@click.option("--reason", default=None, help="Why; shown to the user and kept in the audit log.")
@IN_OPTION
@AT_OPTION
@click.argument("session_id")
def kill(url: str, admin_token: str | None, reason: str | None, delay: str | None, at: str | None,
         session_id: str) -> None:  # fmt: skip
    """Kill one session (now, or with notice: ``--in 5m`` shows a countdown in its page first)."""
    body = notice_body(reason, delay, at)
    data = _request("POST", url, f"/sessions/{quote(session_id, safe='')}/kill", admin_token, json=body)
    if data.get("pending_kill_id"):
        click.echo(f"session {session_id} will be killed: {scheduled(data)}")
    else:
        click.echo(f"kill requested for session {session_id}")


@click.command(name="kill-all")
@URL_OPTION
@TOKEN_OPTION
@click.option("--reason", default=None, help="Why; shown to the users and kept in the audit log.")
@IN_OPTION
@AT_OPTION
@click.argument("app_name")
def kill_all(url: str, admin_token: str | None, reason: str | None, delay: str | None, at: str | None,
             app_name: str) -> None:  # fmt: skip
    """Kill every live session of an app (now, or with notice: ``--in 5m``)."""
    body = notice_body(reason, delay, at)
    data = _request("POST", url, f"/apps/{quote(app_name, safe='')}/kill-all", admin_token, json=body)
    if data.get("pending_kill_id"):
        click.echo(f"{data['live_count']} live session(s) of {app_name} given notice: {scheduled(data)}")
    else:
        click.echo(f"kill requested for {data['killed_count']} session(s) of {app_name}")


@click.command()
@URL_OPTION
@TOKEN_OPTION
@click.argument("message", required=False)
@click.option("--level", type=click.Choice(["info", "warning", "error"]), default="info", show_default=True)
@click.option("--app", "apps", multiple=True, help="Only this app (repeatable).")
@click.option("--host", "hosts", multiple=True, help="Only sessions on this host (repeatable).")
@click.option("--session", "session_ids", multiple=True, help="Only this session (repeatable).")
@click.option("--until", default=None, metavar="TIME", help="Take it away then (18:05, an ISO date-time, +30m).")
@click.option("--list", "list_", is_flag=True, help="List the active announcements.")
@click.option("--remove", "remove", type=int, default=None, metavar="ID", help="Remove this announcement.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
def announce(
    url: str, admin_token: str | None, message: str | None, level: str, apps: tuple[str, ...],
    hosts: tuple[str, ...], session_ids: tuple[str, ...], until: str | None, list_: bool, remove: int | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Show MESSAGE as a banner in every targeted live page (and pages opened while it is active).

    \b
    session-monitor announce "Maintenance at 18:00" --level warning --until 18:05
    session-monitor announce --list
    session-monitor announce --remove 3
    """
    if sum((message is not None, list_, remove is not None)) != 1:
        _fail("give a MESSAGE, --list or --remove ID")
    if remove is not None:
        _request("DELETE", url, f"/announcements/{remove}", admin_token)
        click.echo(f"announcement {remove} removed")
        return
    if list_:
        data = _request("GET", url, "/announcements", admin_token)
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        rows = [
            [str(a["id"]), a["level"], _clean(a["message"], 60), _clean(_targets(a), 40), _local(a["until"]),
             _clean(a["created_by"], 20)]
            for a in data["announcements"]
        ]  # fmt: skip
        click.echo(_table(rows, ["ID", "LEVEL", "MESSAGE", "TARGETS", "UNTIL", "BY"]))
        click.echo(f"{len(rows)} active announcement(s)")
        return
    body: dict[str, Any] = {"message": message, "level": level}
    for key, values in (("apps", apps), ("hosts", hosts), ("session_ids", session_ids)):
        if values:
            body[key] = list(values)
    if until:
        body["until"] = parse_when(until).isoformat()
    data = _request("POST", url, "/announcements", admin_token, json=body)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    ends = f" until {_local(data['until'])}" if data.get("until") else ""
    click.echo(f"announcement {data['id']} shown to {_targets(data)}{ends}")


def _targets(a: dict[str, Any]) -> str:
    parts = [f"{name} {', '.join(a[key])}" for key, name in (("apps", "app"), ("hosts", "host"),
             ("session_ids", "session")) if a.get(key)]  # fmt: skip
    return "; ".join(parts) or "every page"


def scheduled(data: dict[str, Any]) -> str:
    return (
        f"pending kill {data['pending_kill_id']}: at {_local(data['deadline'])} (cancel-kill {data['pending_kill_id']})"
    )


@click.command(name="pending-kills")
@URL_OPTION
@TOKEN_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
def pending_kills(url: str, admin_token: str | None, as_json: bool) -> None:
    """List the kills given notice (``kill --in``, ``kill-all --in``), soonest first."""
    data = _request("GET", url, "/pending-kills", admin_token)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    rows = [
        [str(k["id"]), _clean(k["session_id"] or f"app {k['app_name']}", 40), _local(k["deadline"]),
         _duration(k["seconds_left"]), _clean(k["reason"], 40), _clean(k["created_by"], 20)]
        for k in data["pending_kills"]
    ]  # fmt: skip
    click.echo(_table(rows, ["ID", "TARGET", "DEADLINE", "LEFT", "REASON", "BY"]))
    click.echo(f"{len(rows)} pending kill(s)")


@click.command(name="cancel-kill")
@URL_OPTION
@TOKEN_OPTION
@click.argument("pending_kill_id", type=int)
def cancel_kill(url: str, admin_token: str | None, pending_kill_id: int) -> None:
    """Cancel a kill with notice before its deadline (its countdowns go away)."""
    _request("DELETE", url, f"/pending-kills/{quote(str(pending_kill_id))}", admin_token)
    click.echo(f"pending kill {pending_kill_id} cancelled")
