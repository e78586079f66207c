"""Signed-in users → roles: the users file, SESSION_MONITOR_DASHBOARD_ROLES by name, and an OAuth claim
(``pn.state.user_info`` holds the id token's claims; no provider is reachable here, so the mapping is tested)."""

from __future__ import annotations

import json

import pytest

from session_monitor.dashboard.roles import (
    ADMIN,
    NO_ACCESS,
    DashboardRole,
    RoleMap,
    role_text,
    users_file_entries,
)
from session_monitor.errors import ConfigError

ROLES = json.dumps(
    {
        "users": {"alice": "admin", "bob": {"role": "operator", "apps": ["sales"]}},
        "claim": "groups",
        "claims": {
            "sre": "admin",
            "sales-team": {"role": "operator", "apps": ["sales"]},
            "hr-team": {"role": "operator", "apps": ["hr"]},
            "staff": "viewer",
        },
        "default": "viewer",
    }
)


def test_without_roles_every_user_is_an_admin_as_before() -> None:
    assert RoleMap().role_for("anyone") == ADMIN
    assert RoleMap.parse(None).role_for(None) == ADMIN


def test_names_first_then_the_claim_then_the_default() -> None:
    roles = RoleMap.parse(ROLES)
    assert roles.role_for("alice", {"groups": ["staff"]}) == DashboardRole("admin")
    assert roles.role_for("bob") == DashboardRole("operator", frozenset({"sales"}))
    assert roles.role_for("carol", {"groups": ["staff"]}) == DashboardRole("viewer")
    assert roles.role_for("dave", {"groups": "sre"}) == DashboardRole("admin")  # a claim may be one string
    # The highest role wins; operators' apps add up.
    both = roles.role_for("erin", {"groups": ["staff", "sales-team", "hr-team"]})
    assert both == DashboardRole("operator", frozenset({"sales", "hr"}))
    assert roles.role_for("frank", {"groups": ["sales-team", "sre"]}) == DashboardRole("admin")
    assert roles.role_for("gina", {"groups": ["unknown"]}) == DashboardRole("viewer")
    assert roles.role_for("hank", {"email": "h@example.org"}) == DashboardRole("viewer")
    assert roles.role_for("ivan", {"groups": [1, None, {"x": 1}]}) == DashboardRole("viewer")
    assert roles.role_for(None, None) == DashboardRole("viewer")


def test_a_default_of_none_refuses_the_page() -> None:
    roles = RoleMap.parse(json.dumps({"users": {"alice": "viewer"}, "default": "none"}))
    assert roles.role_for("mallory") == NO_ACCESS
    assert roles.role_for("alice") == DashboardRole("viewer")


def test_users_file_entries_carry_passwords_and_roles() -> None:
    passwords, roles = users_file_entries(
        {"old": "pw-1", "olga": {"password": "pw-2", "role": "operator", "apps": ["a"]}, "v": {"password": "pw-3"}}
    )
    assert passwords == {"old": "pw-1", "olga": "pw-2", "v": "pw-3"}
    assert roles == {"olga": DashboardRole("operator", frozenset({"a"}))}
    # The users file's role wins over the roles' users; without one, the name and claims decide.
    mapped = RoleMap.parse(json.dumps({"users": {"olga": "admin", "v": "viewer"}}), roles)
    assert mapped.role_for("olga") == DashboardRole("operator", frozenset({"a"}))
    assert mapped.role_for("v") == DashboardRole("viewer")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"unknown": 1}',
        '{"users": {"a": "root"}}',
        '{"users": {"a": {"role": "viewer", "apps": ["x"]}}}',
        '{"claims": {"sre": "admin"}}',  # claims without the claim's name
        '{"default": "none", "users": {"a": "none"}}',  # none is for the default only
    ],
)
def test_bad_roles_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(ConfigError, match="SESSION_MONITOR_DASHBOARD_ROLES"):
        RoleMap.parse(text)


def test_headers_and_text() -> None:
    operator = DashboardRole("operator", frozenset({"b", "añ"}))
    assert operator.headers() == {"X-Session-Monitor-Role": "operator", "X-Session-Monitor-Apps": '["a\\u00f1", "b"]'}
    assert operator.headers()["X-Session-Monitor-Apps"].isascii()
    assert operator.may_kill("b") and not operator.may_kill("c")
    assert not DashboardRole("viewer").can_kill and not DashboardRole("viewer").may_kill("b")
    assert role_text(operator) == "operator of añ, b" and role_text(ADMIN) == "admin"
