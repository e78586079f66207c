"""Dashboard users' roles: from the users file, and from Panel's OAuth login (user names or a claim).

The dashboard holds one API token; for each signed-in user it sends that user's role and apps with every action
(``X-Session-Monitor-Role``, ``X-Session-Monitor-Apps``), and the server narrows the token to them: a viewer's
kill is refused by the server (403) even if the page's controls were forged. The page shows controls accordingly.

``SESSION_MONITOR_DASHBOARD_USERS`` entries are a password or ``{"password": "...", "role": "operator", "apps":
["sales"]}``. ``SESSION_MONITOR_DASHBOARD_ROLES`` maps users
signed in any way, OAuth included::

    {"users": {"alice": "admin", "bob": {"role": "operator", "apps": ["sales"]}},
     "claim": "groups",
     "claims": {"sre": "admin", "sales-team": {"role": "operator", "apps": ["sales"]}},
     "default": "viewer"}

A user's role is, first found: their users-file entry, ``users``, every ``claims`` value their ``claim`` (a
string or a list in ``pn.state.user_info``, the OAuth id token's claims) holds (the highest role wins; operators'
apps add up), then ``default``. Without ``SESSION_MONITOR_DASHBOARD_ROLES``, a user without a role in the users
file is an admin, as before roles; with it, ``default`` is ``viewer`` unless set (``"none"`` refuses the page).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from session_monitor.errors import ConfigError

ROLES = ("viewer", "operator", "admin")
_RANK = {name: i for i, name in enumerate(ROLES)}


@dataclass(frozen=True)
class DashboardRole:
    """What one signed-in user may do: ``role`` and, for an operator, the apps (``None``: every app)."""

    role: str
    apps: frozenset[str] | None = None

    @property
    def can_kill(self) -> bool:
        return self.role in ("operator", "admin")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_kill(self, app_name: str) -> bool:
        return self.can_kill and (self.apps is None or app_name in self.apps)

    def headers(self) -> dict[str, str]:
        """What the API is told, so it narrows the dashboard's token to this user (ASCII: JSON escapes the rest)."""
        headers = {"X-Session-Monitor-Role": self.role}
        if self.apps is not None:
            headers["X-Session-Monitor-Apps"] = json.dumps(sorted(self.apps))
        return headers


ADMIN = DashboardRole("admin")
NO_ACCESS = DashboardRole("none")


def parse_role(value: Any, where: str) -> DashboardRole:
    """``"viewer"`` or ``{"role": "operator", "apps": [...]}``; ``ConfigError`` naming ``where`` otherwise."""
    if isinstance(value, str):
        value = {"role": value}
    if not isinstance(value, Mapping) or set(value) - {"role", "apps", "password"}:
        raise ConfigError(f"{where}: a role name or {{'role': ..., 'apps': [...]}}")
    role, apps = value.get("role"), value.get("apps")
    if role == "none" and where.endswith("default"):
        return NO_ACCESS
    if role not in _RANK:
        raise ConfigError(f"{where}: role must be one of {', '.join(ROLES)}, not {str(role)[:40]!r}")
    if apps is not None and (
        role != "operator" or not isinstance(apps, list) or not all(isinstance(a, str) for a in apps)
    ):
        raise ConfigError(f"{where}: apps (a list of app names) limit an operator only")
    return DashboardRole(str(role), frozenset(apps) if apps is not None else None)


def _strongest(roles: Iterable[DashboardRole]) -> DashboardRole | None:
    found = list(roles)
    if not found:
        return None
    top = max(_RANK[r.role] for r in found)
    best = [r for r in found if _RANK[r.role] == top]
    if any(r.apps is None for r in best):
        return DashboardRole(best[0].role)
    return DashboardRole(best[0].role, frozenset().union(*(r.apps or () for r in best)))


@dataclass(frozen=True)
class RoleMap:
    """Users → roles (see the module docstring); :meth:`role_for` is the one mapping function."""

    users: Mapping[str, DashboardRole] = field(default_factory=dict)
    claim: str | None = None
    claims: Mapping[str, DashboardRole] = field(default_factory=dict)
    default: DashboardRole = ADMIN

    @classmethod
    def parse(cls, text: str | None, file_users: Mapping[str, DashboardRole] | None = None) -> RoleMap:
        """From ``SESSION_MONITOR_DASHBOARD_ROLES`` (JSON, or ``None``) and the users file's roles."""
        file_users = dict(file_users or {})
        if not text:
            return cls(users=file_users)
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"SESSION_MONITOR_DASHBOARD_ROLES: not JSON ({exc})") from None
        if not isinstance(raw, dict) or set(raw) - {"users", "claim", "claims", "default"}:
            raise ConfigError("SESSION_MONITOR_DASHBOARD_ROLES: an object of users, claim, claims and default")
        users = {str(k): parse_role(v, f"SESSION_MONITOR_DASHBOARD_ROLES users[{k!r}]") for k, v in
                 dict(raw.get("users") or {}).items()}  # fmt: skip
        claims = {str(k): parse_role(v, f"SESSION_MONITOR_DASHBOARD_ROLES claims[{k!r}]") for k, v in
                  dict(raw.get("claims") or {}).items()}  # fmt: skip
        claim = raw.get("claim")
        if claims and not isinstance(claim, str):
            raise ConfigError("SESSION_MONITOR_DASHBOARD_ROLES: claims need the name of the claim to read (claim)")
        default = parse_role(raw.get("default", "viewer"), "SESSION_MONITOR_DASHBOARD_ROLES default")
        return cls(users={**users, **file_users}, claim=claim, claims=claims, default=default)

    def role_for(self, user: str | None, user_info: Mapping[str, Any] | None = None) -> DashboardRole:
        """The role of the user Panel signed in (``pn.state.user``, ``pn.state.user_info``)."""
        if user is not None and user in self.users:
            return self.users[user]
        if self.claim is not None and user_info:
            value = user_info.get(self.claim)
            values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
            found = _strongest(self.claims[v] for v in values if isinstance(v, str) and v in self.claims)
            if found is not None:
                return found
        return self.default


def users_file_entries(users: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, DashboardRole]]:
    """Split ``SESSION_MONITOR_DASHBOARD_USERS`` into name → password and name → role (entries with a role)."""
    passwords: dict[str, str] = {}
    roles: dict[str, DashboardRole] = {}
    for name, entry in users.items():
        where = f"SESSION_MONITOR_DASHBOARD_USERS[{name!r}]"
        if isinstance(entry, str):
            passwords[name] = entry
            continue
        if not isinstance(entry, Mapping) or not isinstance(entry.get("password"), str):
            raise ConfigError(f"{where}: a password, or {{'password': ..., 'role': ..., 'apps': [...]}}")
        passwords[name] = entry["password"]
        if "role" in entry:
            roles[name] = parse_role(entry, where)
    return passwords, roles


def role_text(role: DashboardRole) -> str:
    """``viewer``, ``admin``, ``operator of sales, hr``: what the page's header says."""
    if role.apps is None:
        return role.role
    return f"{role.role} of {', '.join(sorted(role.apps)) or 'no app'}"
