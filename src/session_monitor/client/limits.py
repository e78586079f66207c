"""Session limits and culling exemptions as the agent applies them, from the server's last sync answer.

The decision never waits on the network: a new session is counted against each limit as the sessions
this process has registered (exact: they are the agent's own records) plus those of the other processes
as the last sync answer counted them (``SyncResponse.others``). Sessions the other processes started
since that answer are not seen: that is how far a limit can overshoot (``docs/policies.md``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

logger = logging.getLogger(__name__)

REFUSED = "refused"
"""End reason of a session refused by a limit."""

APP_FULL = "This app is at its limit of {n} sessions; please try again in a few minutes."
APP_USER_FULL = "You already have {n} sessions of this app open: close one to open another."
USER_FULL = "You already have {n} sessions open: close one to open another."
PROCESS_FULL = "This server is at its limit of {n} sessions; please try again in a few minutes."


class Counted(Protocol):
    """What a limit counts of a live session (the agent's ``SessionRecord``)."""

    app_name: str
    user_id: str | None


def _limit(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True)
class _Rules:
    apps: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    per_user: int | None = None
    per_process: int | None = None
    exempt_users: frozenset[str] = frozenset()
    exempt_apps: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, policies: Any) -> _Rules:
        if not isinstance(policies, dict):
            return cls()
        apps: dict[str, tuple[int | None, int | None]] = {}
        for name, limits in (policies.get("apps") or {}).items():
            if isinstance(name, str) and isinstance(limits, dict):
                apps[name] = (_limit(limits.get("max_sessions")), _limit(limits.get("max_sessions_per_user")))
        return cls(
            apps=apps,
            per_user=_limit(policies.get("max_sessions_per_user")),
            per_process=_limit(policies.get("max_sessions_per_process")),
            exempt_users=frozenset(u for u in policies.get("exempt_users") or () if isinstance(u, str)),
            exempt_apps=frozenset(a for a in policies.get("exempt_apps") or () if isinstance(a, str)),
        )


class Limits:
    """The policies and the other processes' counts of the agent's last sync answer (any thread reads them)."""

    def __init__(self) -> None:
        self._rules = _Rules()
        self._others: dict[str, Any] = {}
        self._lock = threading.Lock()

    def update(self, policies: Any, others: Any) -> bool:
        """Take a sync answer's ``policies`` and ``others`` (``None``: keep the last); True if exemptions changed."""
        if policies is None:
            return False
        rules = _Rules.parse(policies)
        with self._lock:
            old, self._rules = self._rules, rules
            self._others = others if isinstance(others, dict) else {}
        return (old.exempt_users, old.exempt_apps) != (rules.exempt_users, rules.exempt_apps)

    def exempts(self, app_name: str, user_id: str | None) -> bool:
        """Whether a policy exempts this app's or this user's sessions from idle culling and maximum age."""
        rules = self._rules
        return app_name in rules.exempt_apps or (user_id is not None and user_id in rules.exempt_users)

    def check(self, live: Iterable[Counted], app_name: str, user_id: str | None) -> str | None:
        """Why a new session of ``app_name`` for ``user_id`` would go over a limit (the page's text), else None.

        ``live``: the sessions this process has registered (the new one not among them).
        """
        with self._lock:
            rules, others = self._rules, self._others
        app_max, app_user_max = rules.apps.get(app_name, (None, None))
        if app_max is None and app_user_max is None and rules.per_user is None and rules.per_process is None:
            return None
        own_total = own_app = own_app_user = own_user = 0
        for record in live:
            own_total += 1
            same_user = user_id is not None and record.user_id == user_id
            own_user += same_user
            if record.app_name == app_name:
                own_app += 1
                own_app_user += same_user
        if rules.per_process is not None and own_total + 1 > rules.per_process:
            return PROCESS_FULL.format(n=rules.per_process)
        if app_max is not None and own_app + _count(others.get("apps", {}).get(app_name)) + 1 > app_max:
            return APP_FULL.format(n=app_max)
        if user_id is None:
            return None
        if app_user_max is not None:
            theirs = _count((others.get("app_users", {}).get(app_name) or {}).get(user_id))
            if own_app_user + theirs + 1 > app_user_max:
                return APP_USER_FULL.format(n=app_user_max)
        if rules.per_user is not None and own_user + _count(others.get("users", {}).get(user_id)) + 1 > rules.per_user:
            return USER_FULL.format(n=rules.per_user)
        return None
