"""Who may call what: roles, named tokens, the caller (:class:`Principal`) and the one rule that admits it.

Roles, least to most: ``viewer`` (reads: sessions, agents, history, stats, stalls), ``operator`` (+ kill, kill-all,
announce, drain; optionally only for a list of apps), ``admin`` (+ policies, cleanup, audit, config). Tokens:

- ``SESSION_MONITOR_ADMIN_TOKEN``: an admin token owned by ``admin`` (as before roles).
- ``SESSION_MONITOR_TOKENS`` / ``SESSION_MONITOR_TOKENS_FILE``: named tokens, a JSON object
  ``{"<owner>": {"token": "...", "role": "operator", "apps": ["sales"]}}``; the owner is named in the audit log.
- ``SESSION_MONITOR_CLIENT_TOKEN``: what Panel processes send (the agent protocol); it holds no role.

A caller may narrow its own grant for one request (``X-Session-Monitor-Role``, ``X-Session-Monitor-Apps``), never
widen it: the dashboard holds one token and acts for its signed-in users with each user's role.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import HTTPException

from session_monitor.protocol import MAX_ACTOR, MAX_APP_NAME
from session_monitor.server.tokens import Grant, Role

ROLE_HEADER = "x-session-monitor-role"
APPS_HEADER = "x-session-monitor-apps"


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``kind``: ``staff`` (a role token), ``client`` or ``anonymous``. ``role`` is what the caller
    may do as staff: its token's role narrowed by its headers; for a caller without a role token, ``ADMIN`` while
    no role token is configured (everything open, as in the prototype), else ``None``."""

    kind: str
    actor: str
    remote_addr: str | None
    role: Role | None = None
    apps: frozenset[str] | None = None
    owner: str | None = None

    def may_act_on(self, app_name: str) -> bool:
        return self.apps is None or app_name in self.apps


def actor_name(grant: Grant | None, claimed: str | None) -> str:
    """The audit log's actor: the claimed name (``X-Session-Monitor-Actor``) and the token's owner.

    The legacy admin token keeps its old form (the claim, else ``admin``); a named token's owner is always named:
    ``alice`` alone, or ``José via dashboard`` when the dashboard's token acts for its signed-in user.
    """
    if grant is None:
        return claimed or "anonymous"
    if grant.owner in ("admin", "client") or not claimed or claimed == grant.owner:
        return claimed or grant.owner
    suffix = f" via {grant.owner}"
    return claimed[: MAX_ACTOR - len(suffix)] + suffix if len(claimed) + len(suffix) > MAX_ACTOR else claimed + suffix


def parse_apps_header(value: str) -> frozenset[str]:
    """``X-Session-Monitor-Apps``: a JSON array of app names (``json.dumps`` keeps it ASCII with ``\\u`` escapes)."""
    try:
        apps = json.loads(value)
    except ValueError:
        apps = None
    if not isinstance(apps, list) or not all(isinstance(a, str) and 0 < len(a) <= MAX_APP_NAME for a in apps):
        raise HTTPException(400, f"invalid {APPS_HEADER} header: a JSON array of app names")
    return frozenset(apps)


def narrowed(principal: Principal, role_header: str | None, apps_header: str | None) -> Principal:
    """The principal with the role and apps its headers ask for, if they are narrower than its own; never wider."""
    role, apps = principal.role, principal.apps
    if role_header is not None:
        try:
            wanted = Role.parse(role_header)
        except ValueError as exc:
            raise HTTPException(400, f"invalid {ROLE_HEADER} header: {exc}") from None
        role = min(role, wanted) if role is not None else None
    if apps_header is not None:
        wanted_apps = parse_apps_header(apps_header)
        apps = wanted_apps if apps is None else apps & wanted_apps
    if role == principal.role and apps == principal.apps:
        return principal
    return Principal(principal.kind, principal.actor, principal.remote_addr, role, apps, principal.owner)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def refuse(principal: Principal, need: Role, *, client_too: bool) -> HTTPException:
    """Why ``principal`` may not call a route that needs ``need``: 401 without a token, else 403."""
    if principal.kind == "anonymous" and (principal.role is None or need == Role.CLIENT):
        token = "the client token" if need == Role.CLIENT else f"a {need.label} token (or the admin token)"
        return unauthorized(f"{token} required: send 'Authorization: Bearer <token>'")
    if need == Role.CLIENT:
        return HTTPException(403, "this call is for Panel processes: it needs the client token (or an admin token)")
    if principal.kind == "client":
        return HTTPException(
            403, f"this action needs a {need.label} token (or the admin token); the client token is not enough"
        )
    has = principal.role.label if principal.role is not None else "no role"
    also = " or the client token" if client_too else ""
    return HTTPException(403, f"this action needs the {need.label} role{also}; {principal.actor} has {has}")


def refuse_app(principal: Principal, app_name: str | None) -> HTTPException:
    """403 for an operator limited to apps: another app's, or (``None``) an action on no one app."""
    shown = ", ".join(sorted(principal.apps or ()))
    if app_name is None:
        return HTTPException(403, f"{principal.actor} may act on the apps {shown} only; this action is on no one app")
    return HTTPException(403, f"{principal.actor} may act on the apps {shown} only, not on {app_name[:MAX_APP_NAME]!r}")
