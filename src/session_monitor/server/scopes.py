"""Which apps a request acts on, for the guards of operator routes (``require_role(..., app_from=...)``).

Each function returns the app (a name), the apps (a set), or ``None`` for an action that reaches every app (an
announcement to all, a process with no live session to tell whose it is): an operator limited to apps may act on
its own apps only, and on no ``None`` action. A body that does not parse, or a stored record that does not exist,
gives the empty set: the route then answers its own 422 or 404, as for everyone.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import ValidationError

from session_monitor.protocol import DrainTarget
from session_monitor.store.drains import DrainStore
from session_monitor.store.notices import NoticeStore

NOTHING: frozenset[str] = frozenset()
"""A request the route refuses anyway (422, or 404 for a record that does not exist): no app to check."""


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:  # not JSON, or not UTF-8
        return None


def _int_param(request: Request, name: str) -> int | None:
    try:
        return int(request.path_params[name])
    except (KeyError, ValueError):
        return None


async def apps_of_announcement_body(request: Request) -> frozenset[str] | None:
    """``POST /announcements``: the body's ``apps`` (``None`` without: every page)."""
    body = await _json_body(request)
    if not isinstance(body, dict):
        return NOTHING
    apps = body.get("apps")
    if apps is None:
        return None
    if not isinstance(apps, list) or not all(isinstance(app, str) for app in apps):
        return NOTHING
    return frozenset(apps)


async def apps_of_announcement(request: Request) -> frozenset[str] | None:
    """``DELETE /announcements/{announcement_id}``: the apps the active announcement targets."""
    announcement_id = _int_param(request, "announcement_id")
    if announcement_id is None:
        return NOTHING
    store: NoticeStore = request.app.state.notice_store
    active, apps = await store.apps_of_announcement(announcement_id)
    return apps if active else NOTHING


async def apps_of_pending_kill(request: Request) -> frozenset[str] | None:
    """``DELETE /pending-kills/{pending_kill_id}``: the app whose sessions the kill would end."""
    pending_kill_id = _int_param(request, "pending_kill_id")
    if pending_kill_id is None:
        return NOTHING
    store: NoticeStore = request.app.state.notice_store
    return await store.apps_of_pending_kill(pending_kill_id) or NOTHING


async def apps_of_drain_target(request: Request) -> frozenset[str] | None:
    """``POST /drain``, ``/undrain``: the apps of the live sessions on the processes the target names.

    A drain ends every session of a process, whatever its app: an operator limited to apps may drain a process
    only while all its live sessions are of its apps (an idle process gives ``None``: it may serve any app).
    """
    try:
        target = DrainTarget.model_validate(await _json_body(request))
    except ValidationError:
        return NOTHING
    store: DrainStore = request.app.state.drain_store
    served = await store.apps_served(target)
    if served is None:
        return NOTHING  # no live process: the route answers 404
    return served or None
