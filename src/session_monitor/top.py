"""``session-monitor top``: the live sessions as a terminal table like ``top``, sorted by what they cost.

Reads ``GET /sessions`` and ``GET /agents`` of the REST API (admin token, ``SESSION_MONITOR_URL``, as
``ls`` does) every ``--interval-s`` (2 s) and redraws with ``rich``. Keys change the sort: ``l`` loop time
of the last minute (the default), ``t`` total loop time, ``p`` thread-pool time, ``m`` document data,
``c`` callbacks; ``q`` quits. Every cell that holds client text (app names, users, callback names) is a
``rich.text.Text``, so markup in it is shown as typed, never interpreted; control characters become ``?``.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class SortKey:
    key: str
    label: str
    field: str


SORTS: dict[str, SortKey] = {
    s.key: s
    for s in (
        SortKey("l", "loop time (1 min)", "loop_seconds_1m"),
        SortKey("t", "loop time (total)", "loop_seconds_total"),
        SortKey("p", "pool time", "pool_thread_seconds"),
        SortKey("m", "document data", "doc_data_bytes"),
        SortKey("c", "callbacks", "callbacks_total"),
    )
}
DEFAULT_SORT = "l"
HELP = "keys: l loop 1m · t loop total · p pool · m doc data · c callbacks · q quit"


def _clean(value: Any, limit: int = 40) -> Text:
    """Client text as a plain ``Text`` (no markup), printable, cut to ``limit``."""
    if value is None:
        return Text("-")
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return Text(text if len(text) <= limit else text[: limit - 1] + "…")


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _bytes(value: Any) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "-"  # unreachable


def sort_rows(rows: list[dict[str, Any]], sort: str) -> list[dict[str, Any]]:
    """Rows by the sort key's field, largest first; rows not measured yet last."""
    field = SORTS[sort].field
    return sorted(rows, key=lambda r: float((r.get("cost") or {}).get(field) or 0.0), reverse=True)


def render(
    rows: list[dict[str, Any]],
    sort: str = DEFAULT_SORT,
    *,
    leftovers: int = 0,
    error: str | None = None,
    limit: int = 50,
) -> Group:
    """One frame: a header line and the table of the first ``limit`` rows in ``sort`` order."""
    table = Table(expand=False, pad_edge=False, box=None, header_style="bold")
    for name, justify in (
        ("SESSION", "left"), ("APP", "left"), ("USER", "left"), ("HOST:PID", "left"), ("LOOP 1M", "right"),
        ("LOOP TOTAL", "right"), ("POOL", "right"), ("CALLBACKS", "right"), ("SLOWEST", "left"),
        ("DOC DATA", "right"), ("MODELS", "right"), ("THREADS", "right"), ("JOBS", "right"), ("STATE", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for row in sort_rows(rows, sort)[:limit]:
        cost = row.get("cost") or {}
        slowest = cost.get("slowest_callback")
        table.add_row(
            Text(str(row["session_id"])[:12]),
            _clean(row.get("app_name"), 24),
            _clean(row.get("user_id"), 16),
            _clean(f"{row.get('host') or '-'}:{row.get('pid') or '-'}", 24),
            Text(_seconds(cost.get("loop_seconds_1m")) if cost else "-"),
            Text(_seconds(cost.get("loop_seconds_total")) if cost else "-"),
            Text(_seconds(cost.get("pool_thread_seconds")) if cost else "-"),
            Text(str(cost.get("callbacks_total", "-"))),
            _clean(f"{slowest['qualname'].rsplit('.', 1)[-1]} {_seconds(slowest['duration_s'])}" if slowest else None),
            Text(_bytes(cost.get("doc_data_bytes"))),
            Text(str(cost.get("doc_models") if cost.get("doc_models") is not None else "-")),
            Text(str(cost.get("threads_alive", "-"))),
            Text(str(cost.get("pool_jobs", "-"))),
            _clean(row.get("state"), 12),
        )
    header = Text.assemble(
        ("session-monitor top", "bold"),
        f" · {len(rows)} live session(s) · sorted by {SORTS[sort].label}",
        (f" · {leftovers} leftover(s) of ended sessions" if leftovers else "", "bold red"),
    )
    lines: list[Any] = [header, Text(HELP, style="dim")]
    if error:
        lines.append(Text(f"error: {error}", style="red"))
    lines.append(table)
    return Group(*lines)


def print_frame(rows: list[dict[str, Any]], sort: str = DEFAULT_SORT, *, leftovers: int = 0) -> None:
    """One frame on standard output (``--once``)."""
    Console().print(render(rows, sort, leftovers=leftovers))


Fetch = Callable[[], tuple[list[dict[str, Any]], int]]
"""Returns the live session rows and the number of leftovers the processes report; raises on failure."""


class FetchError(Exception):
    """The API could not be read; the message says why in one line."""


def api_fetch(url: str, token: str | None, app: str | None = None, *, timeout_s: float = 10.0) -> Fetch:
    """A :data:`Fetch` over the REST API: ``GET /sessions`` (live, ``app`` only if given) and ``GET /agents``."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")

    def get(path: str, params: dict[str, str] | None = None) -> Any:
        try:
            response = httpx.get(base + path, params=params, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise FetchError(f"cannot reach the session monitor at {url}: {exc}") from None
        if response.status_code == 401:
            raise FetchError("the server refused (401): set SESSION_MONITOR_ADMIN_TOKEN")
        if not response.is_success:
            raise FetchError(f"the server refused ({response.status_code}): {response.text[:200]}")
        return response.json()

    def fetch() -> tuple[list[dict[str, Any]], int]:
        rows = get("/sessions", {"app": app} if app else None)["sessions"]
        agents = get("/agents")["agents"]
        return rows, sum(len(agent.get("leftovers") or ()) for agent in agents)

    return fetch


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[bool]:
    """Keys one at a time, without echo, while inside; ``False`` if ``fd`` is not a terminal."""
    try:
        import termios
        import tty

        saved = termios.tcgetattr(fd)
    except (ImportError, OSError):
        yield False
        return
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _read_key(fd: int, timeout_s: float) -> str | None:
    ready, _, _ = select.select([fd], [], [], max(0.0, timeout_s))
    if not ready:
        return None
    data = os.read(fd, 32)
    return data.decode(errors="replace")[-1:] if data else "q"  # end of input: quit


def run(fetch: Fetch, *, interval_s: float = 2.0, sort: str = DEFAULT_SORT, console: Console | None = None) -> None:
    """Redraw every ``interval_s`` until ``q`` (or end of input); a key of :data:`SORTS` re-sorts at once."""
    console = console or Console()
    fd = sys.stdin.fileno()
    rows: list[dict[str, Any]] = []
    leftovers = 0
    error: str | None = None
    with _cbreak(fd), Live(console=console, auto_refresh=False, screen=False) as live:
        next_fetch = 0.0
        while True:
            now = time.monotonic()
            if now >= next_fetch:
                try:
                    rows, leftovers = fetch()
                    error = None
                except Exception as exc:  # shown in the frame; the next refresh tries again
                    error = str(exc) or type(exc).__name__
                next_fetch = now + interval_s
            live.update(render(rows, sort, leftovers=leftovers, error=error), refresh=True)
            key = _read_key(fd, next_fetch - time.monotonic())
            if key is None:
                continue
            key = key.lower()
            if key == "q":
                return
            if key in SORTS:
                sort = key
