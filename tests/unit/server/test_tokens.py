"""Named tokens: the file and the environment JSON, the checks at startup (naming the owner, never the token),
the table's match, and how a caller narrows its own grant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click.testing
import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from session_monitor.server.access import Principal, actor_name, narrowed
from session_monitor.server.settings import Settings
from session_monitor.server.tokens import Grant, Role

ALICE = "alice-operator-token-0001"
GRAFANA = "grafana-viewer-token-0002"
ROOT = "root-admin-named-token-03"
LEGACY = "legacy-admin-token-00004"


@pytest.fixture(autouse=True)
def _own_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, tokens: dict[str, Any]) -> Path:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(tokens), encoding="utf-8")
    return path


TOKENS = {
    "alice": {"token": ALICE, "role": "operator", "apps": ["sales"]},
    "grafana": {"token": GRAFANA, "role": "viewer"},
    "root": {"token": ROOT, "role": "admin"},
}


def test_the_file_and_the_legacy_admin_token_make_one_table(tmp_path: Path) -> None:
    settings = Settings(tokens_file=write(tmp_path, TOKENS), admin_token=LEGACY)
    table = settings.token_table
    assert table.match(ALICE) == Grant("alice", Role.OPERATOR, frozenset({"sales"}))
    assert table.match(GRAFANA) == Grant("grafana", Role.VIEWER)
    assert table.match(ROOT) == Grant("root", Role.ADMIN)
    assert table.match(LEGACY) == Grant("admin", Role.ADMIN)
    assert table.match(ALICE[:-1]) is None and table.match(ALICE + "x") is None and table.match(None) is None
    assert table.staff_guarded and not table.client_guarded
    assert settings.bind_problem() is None or settings.host == "127.0.0.1"


def test_tokens_from_the_environment_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SESSION_MONITOR_TOKENS", json.dumps({"grafana": TOKENS["grafana"]}))
    monkeypatch.setenv("SESSION_MONITOR_TOKENS_FILE", str(write(tmp_path, {"alice": TOKENS["alice"]})))
    table = Settings().token_table
    assert {g.owner for g in table.grants} == {"grafana", "alice"}
    # A named token alone protects a public bind, as the admin token does.
    assert Settings(host="0.0.0.0").bind_problem() is None


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"token": "short-token-15c", "role": "viewer"}, "'bob' is shorter than 16 characters"),
        ({"token": GRAFANA, "role": "viewer"}, "the tokens of 'grafana' and 'bob' are the same"),
        ({"token": "bob-token-long-enough-1", "role": "viewer", "apps": ["a"]}, "apps limit an operator only"),
        ({"token": "bob-token-long-enough-1", "role": "root"}, "'bob'"),
        ({"token": "bob-token-long-enough-1", "role": "viewer", "extra": 1}, "'bob'"),
    ],
)
def test_a_bad_entry_is_refused_naming_its_owner_not_its_token(tmp_path: Path, entry: dict[str, Any], says: str):
    path = write(tmp_path, {"grafana": TOKENS["grafana"], "bob": entry})
    with pytest.raises(ValidationError) as info:
        Settings(tokens_file=path)
    text = str(info.value)
    assert says in text
    assert entry["token"] not in text and GRAFANA not in text


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"bob": "a-string-not-an-object"}'])
def test_a_malformed_file_is_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValidationError, match="tokens file|in .*tokens.json"):
        Settings(tokens_file=path)


def test_missing_file_and_reserved_owner(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot read the tokens file"):
        Settings(tokens_file=tmp_path / "absent.json")
    with pytest.raises(ValidationError, match="'admin' is reserved"):
        Settings(tokens={"admin": {"token": ROOT, "role": "admin"}})
    with pytest.raises(ValidationError, match="same"):
        Settings(admin_token=ROOT, tokens={"root": {"token": ROOT, "role": "admin"}})


def test_serve_refuses_a_short_named_token_naming_the_owner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from session_monitor.cli import main

    calls: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: calls.append(k))
    short = "only-15-chars!!"
    path = write(tmp_path, {"carol": {"token": short, "role": "operator"}})
    result = click.testing.CliRunner().invoke(main, ["serve"], env={"SESSION_MONITOR_TOKENS_FILE": str(path)})
    assert result.exit_code == 2, result.output
    assert "the token of 'carol' is shorter than 16 characters" in result.stderr
    assert short not in result.output and calls == []


def test_narrowing_never_widens() -> None:
    operator = Principal("staff", "alice", None, Role.OPERATOR, frozenset({"sales", "hr"}), "alice")
    as_viewer = narrowed(operator, "viewer", None)
    assert as_viewer.role == Role.VIEWER
    assert narrowed(operator, "admin", None).role == Role.OPERATOR
    assert narrowed(operator, None, json.dumps(["hr", "finance"])).apps == frozenset({"hr"})
    admin = Principal("staff", "root", None, Role.ADMIN, None, "root")
    assert narrowed(admin, "operator", json.dumps(["sales"])).apps == frozenset({"sales"})
    nobody = Principal("client", "client", None, None, None, "client")
    assert narrowed(nobody, "admin", None).role is None
    for bad_role, bad_apps in (("root", None), (None, "sales"), (None, "[1]"), (None, '[""]')):
        with pytest.raises(HTTPException) as info:
            narrowed(operator, bad_role, bad_apps)
        assert info.value.status_code == 400


def test_the_actor_names_the_tokens_owner() -> None:
    assert actor_name(Grant("admin", Role.ADMIN), None) == "admin"
    assert actor_name(Grant("admin", Role.ADMIN), "José") == "José"  # the legacy admin token as before
    assert actor_name(Grant("alice", Role.OPERATOR), None) == "alice"
    assert actor_name(Grant("alice", Role.OPERATOR), "alice") == "alice"
    assert actor_name(Grant("dashboard", Role.ADMIN), "José") == "José via dashboard"
    long = actor_name(Grant("dashboard", Role.ADMIN), "x" * 100)
    assert len(long) == 100 and long.endswith(" via dashboard")
    assert actor_name(None, None) == "anonymous"
