"""``session-monitor dashboard``: when it refuses to start, and how credentials are read."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner, Result

from session_monitor.cli import _dashboard_users, main

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
