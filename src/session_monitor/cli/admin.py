"""The admin commands over HTTP: ``ls``, ``top``, ``cleanup`` (and the helpers of ``cli/notices``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import click
import httpx

from session_monitor import defaults
from session_monitor.cli.options import TOKEN_OPTION, URL_OPTION, _fail


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


@click.command(name="ls")
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


@click.command()
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


@click.command()
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
