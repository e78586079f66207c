"""``session-monitor dashboard``: when it refuses to start, and how credentials are read."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from session_monitor.cli import _dashboard_users, main
from session_monitor.dashboard.roles import DashboardRole, RoleMap

TOKEN = "dashboard-admin-token-0123456789"


def run(args: list[str], **env: str) -> Result:
    clean: dict[str, str | None] = {k: None for k in os.environ if k.startswith("SESSION_MONITOR_")}
    clean.update(env)
    return CliRunner().invoke(main, args, env=clean)


def test_a_token_without_a_login_is_refused() -> None:
    result = run(["dashboard", "--port", "1"], SESSION_MONITOR_ADMIN_TOKEN=TOKEN)
    assert result.exit_code == 2
    assert "needs a login because the admin token is set" in result.output
    assert "SESSION_MONITOR_DASHBOARD_PASSWORD" in result.output
    assert TOKEN not in result.output


def test_a_public_bind_without_a_login_is_refused() -> None:
    result = run(["dashboard", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 2 and "0.0.0.0 is not a loopback address" in result.output


def test_users_come_from_json_text_or_a_json_file(tmp_path: Path) -> None:
    users = {"alice": "pw-1", "bob": "pw-2"}
    assert _dashboard_users(json.dumps(users)) == users
    path = tmp_path / "users.json"
    path.write_text(json.dumps(users))
    assert _dashboard_users(str(path)) == users
    assert _dashboard_users(None) is None
    for bad in ('["alice"]', "{not json", '{"alice": 3}'):
        result = run(["dashboard", "--port", "1"], SESSION_MONITOR_DASHBOARD_USERS=bad)
        assert result.exit_code == 2 and "SESSION_MONITOR_DASHBOARD_USERS" in result.output, bad


def test_roles_and_oauth_reach_the_dashboard(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve_dashboard`` is replaced by a recorder: nothing listens (the real one blocks until interrupted)."""
    import session_monitor.dashboard as dashboard_package

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(dashboard_package, "serve_dashboard", lambda url, **kwargs: calls.append(kwargs))
    users = {"vera": {"password": "pw-vera", "role": "viewer"}, "grace": "pw-grace"}
    roles = {"claim": "groups", "claims": {"ops": {"role": "operator", "apps": ["sales"]}}, "default": "viewer"}
    env = {"SESSION_MONITOR_DASHBOARD_USERS": json.dumps(users), "SESSION_MONITOR_DASHBOARD_ROLES": json.dumps(roles)}
    result = run(["dashboard", "--port", "1"], SESSION_MONITOR_ADMIN_TOKEN=TOKEN, **env)
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert call["users"] == {"vera": "pw-vera", "grace": "pw-grace"} and call["oauth_provider"] is None
    role_map: RoleMap = call["roles"]
    assert role_map.role_for("vera") == DashboardRole("viewer")
    assert role_map.role_for("grace") == DashboardRole("viewer")  # roles configured: the default applies
    assert role_map.role_for("x", {"groups": ["ops"]}) == DashboardRole("operator", frozenset({"sales"}))

    # An OAuth login satisfies "needs a login"; its users are mapped by the same roles.
    calls.clear()
    result = run(["dashboard", "--port", "1", "--oauth-provider", "generic"], SESSION_MONITOR_ADMIN_TOKEN=TOKEN)
    assert result.exit_code == 0, result.output
    assert calls[0]["oauth_provider"] == "generic" and calls[0]["users"] is None


def test_bad_roles_stop_the_dashboard_with_a_reason() -> None:
    result = run(["dashboard", "--port", "1"], SESSION_MONITOR_DASHBOARD_ROLES='{"users": {"a": "root"}}')
    assert result.exit_code == 2 and "SESSION_MONITOR_DASHBOARD_ROLES" in result.output and "root" in result.output
    bad_user = json.dumps({"a": {"password": "pw", "role": "viewer", "apps": ["x"]}})
    result = run(["dashboard", "--port", "1"], SESSION_MONITOR_DASHBOARD_USERS=bad_user)
    assert result.exit_code == 2 and "operator only" in result.output
