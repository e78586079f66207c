"""Server settings from the environment, the bind check, and database URL handling."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from session_monitor import defaults
from session_monitor.errors import ConfigError
from session_monitor.server.settings import Settings, is_loopback
from session_monitor.store.engine import Database, normalize_url

TOKEN = "a-token-of-twenty-chars"


@pytest.fixture(autouse=True)
def _own_working_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A working directory of our own (the root conftest removes SESSION_MONITOR_* variables)."""
    monkeypatch.chdir(tmp_path)


# --- Settings from the environment --------------------------------------------------------------------------------


def test_defaults_without_environment() -> None:
    settings = Settings()
    assert settings.host == defaults.API_HOST == "127.0.0.1"
    assert settings.port == defaults.API_PORT == 8000
    assert settings.database_url is None
    assert settings.admin_token is None and settings.client_token is None
    assert settings.insecure is False
    assert settings.stale_after_s == defaults.STALE_AFTER_S
    assert settings.expire_after_s == defaults.EXPIRE_AFTER_S
    assert settings.run_reaper is True
    assert settings.trusted_origins == []


def test_settings_read_session_monitor_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "SESSION_MONITOR_HOST": "10.1.2.3",
        "SESSION_MONITOR_PORT": "9123",
        "SESSION_MONITOR_DATABASE_URL": "postgresql://monitor@db.example/monitor",
        "SESSION_MONITOR_DATABASE_SCHEMA": "tenant_a",
        "SESSION_MONITOR_ADMIN_TOKEN": TOKEN,
        "SESSION_MONITOR_CLIENT_TOKEN": TOKEN[::-1],
        "SESSION_MONITOR_INSECURE": "true",
        "SESSION_MONITOR_STALE_AFTER_S": "30",
        "SESSION_MONITOR_EXPIRE_AFTER_S": "90.5",
        "SESSION_MONITOR_REAPER_INTERVAL_S": "2",
        "SESSION_MONITOR_MAX_BODY_BYTES": "2048",
        "SESSION_MONITOR_TRUSTED_ORIGINS": '["https://ops.example"]',
        "SESSION_MONITOR_RUN_REAPER": "false",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    settings = Settings()

    assert settings.host == "10.1.2.3"
    assert settings.port == 9123
    assert settings.database_url == "postgresql://monitor@db.example/monitor"
    assert settings.resolved_database_url == "postgresql://monitor@db.example/monitor"
    assert settings.database_schema == "tenant_a"
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == TOKEN
    assert settings.client_token is not None and settings.client_token.get_secret_value() == TOKEN[::-1]
    assert settings.insecure is True
    assert settings.stale_after_s == 30.0
    assert settings.expire_after_s == 90.5
    assert settings.reaper_interval_s == 2.0
    assert settings.max_body_bytes == 2048
    assert settings.trusted_origins == ["https://ops.example"]
    assert settings.run_reaper is False
    # Tokens never show in a repr (logs, tracebacks).
    assert TOKEN not in repr(settings) and TOKEN[::-1] not in repr(settings)


def test_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_MONITOR_PORT", "9123")
    assert Settings(port=9999).port == 9999


def test_variables_without_the_prefix_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "1234")
    monkeypatch.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    settings = Settings()
    assert settings.port == defaults.API_PORT
    assert settings.database_url is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SESSION_MONITOR_PORT", "not-a-port"),
        ("SESSION_MONITOR_PORT", "70000"),
        ("SESSION_MONITOR_STALE_AFTER_S", "0"),
        ("SESSION_MONITOR_MAX_BODY_BYTES", "10"),
        ("SESSION_MONITOR_ADMIN_TOKEN", "short"),
        ("SESSION_MONITOR_CLIENT_TOKEN", "fifteen-chars!!"),
    ],
)
def test_invalid_environment_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    field = name.removeprefix("SESSION_MONITOR_").lower()
    assert field in str(info.value)
    if "TOKEN" in name:
        assert "at least 16 characters" in str(info.value)


def test_an_empty_token_means_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_MONITOR_ADMIN_TOKEN", "")
    monkeypatch.setenv("SESSION_MONITOR_CLIENT_TOKEN", "")
    settings = Settings()
    assert settings.admin_token is None and settings.client_token is None
    assert settings.host_allowlist is not None


def test_default_database_is_sqlite_under_data_dir(tmp_path: Path) -> None:
    url = Settings().resolved_database_url
    assert url.startswith("sqlite:///")
    path = Path(url.removeprefix("sqlite:///"))
    assert path.is_absolute()
    assert path == (tmp_path / defaults.DATA_DIR / defaults.SQLITE_FILENAME).resolve()


def test_default_database_follows_a_relative_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SESSION_MONITOR_DATA_DIR", "state/monitor")
    path = Path(Settings().resolved_database_url.removeprefix("sqlite:///"))
    assert path.is_absolute()
    assert path == (tmp_path / "state" / "monitor" / defaults.SQLITE_FILENAME).resolve()
    # The resolved URL is one normalize_url accepts, and it creates the folder.
    assert normalize_url(Settings().resolved_database_url).database == str(path)
    assert path.parent.is_dir()


# --- bind_problem and host_allowlist -------------------------------------------------------------------------------

LOOPBACK = ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2", "127.255.255.254", "0:0:0:0:0:0:0:1"]
PUBLIC = ["0.0.0.0", "::", "[::]", "192.168.1.10", "10.0.0.1", "2001:db8::1", "monitor.example.com", "localhost.evil"]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_binds_are_always_fine(host: str) -> None:
    assert is_loopback(host)
    assert Settings(host=host).bind_problem() is None


@pytest.mark.parametrize("host", PUBLIC)
def test_public_binds_without_an_admin_token_are_refused(host: str) -> None:
    assert not is_loopback(host)
    problem = Settings(host=host).bind_problem()
    assert problem is not None
    assert f"refusing to listen on {host}" in problem
    assert "SESSION_MONITOR_ADMIN_TOKEN" in problem and "--insecure" in problem


@pytest.mark.parametrize("host", PUBLIC)
def test_a_client_token_alone_does_not_allow_a_public_bind(host: str) -> None:
    assert Settings(host=host, client_token=TOKEN).bind_problem() is not None


@pytest.mark.parametrize("host", PUBLIC)
def test_an_admin_token_or_insecure_allows_a_public_bind(host: str) -> None:
    assert Settings(host=host, admin_token=TOKEN).bind_problem() is None
    assert Settings(host=host, insecure=True).bind_problem() is None


def test_bind_check_reads_host_and_insecure_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_MONITOR_HOST", "0.0.0.0")
    assert Settings().bind_problem() is not None
    monkeypatch.setenv("SESSION_MONITOR_INSECURE", "1")
    assert Settings().bind_problem() is None


def test_host_allowlist_is_always_on_unless_a_wildcard_is_set() -> None:
    assert Settings().host_allowlist == frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
    # Tokens guard the endpoints, not which page may reach them: DNS-rebinding pages are kept out regardless.
    assert Settings(admin_token=TOKEN).host_allowlist is not None
    assert Settings(client_token=TOKEN).host_allowlist is not None
    assert Settings(admin_token=TOKEN, client_token=TOKEN + "x").host_allowlist is not None
    assert Settings(insecure=True).host_allowlist is not None
    # Only an explicit "*" answers any Host.
    assert Settings(allowed_hosts=["*"]).host_allowlist is None
    assert Settings(allowed_hosts=["proxy.example", "*"]).host_allowlist is None
    # The bind address and configured names are served; a wildcard bind adds this machine's names.
    assert "10.1.2.3" in (Settings(host="10.1.2.3", admin_token=TOKEN).host_allowlist or ())
    wildcard = Settings(host="0.0.0.0").host_allowlist or frozenset()
    assert wildcard >= (Settings().host_allowlist or frozenset())
    assert socket.gethostname().lower() in wildcard
    assert "proxy.example" in (Settings(allowed_hosts=["Proxy.Example"]).host_allowlist or ())


# --- normalize_url and Database ---------------------------------------------------------------------------------


def test_sqlite_urls_get_the_async_driver_and_their_folder(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "monitor.sqlite3"
    assert not target.parent.exists()
    url = normalize_url(f"sqlite:///{target}")
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == str(target)
    assert target.parent.is_dir()
    assert not target.exists()  # only the folder: the engine creates the file


def test_sqlite_relative_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    relative = normalize_url("sqlite:///rel/monitor.sqlite3")
    assert relative.database == "rel/monitor.sqlite3"
    assert (tmp_path / "rel").is_dir()

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    in_home = normalize_url("sqlite:///~/monitor/db.sqlite3")
    # The folder created and the file SQLite opens are the same place (SQLite does not expand ``~``).
    assert in_home.database == str(home / "monitor" / "db.sqlite3")
    assert (home / "monitor").is_dir()
    assert not (tmp_path / "~").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_sqlite_in_memory_creates_nothing(url: str, tmp_path: Path) -> None:
    assert normalize_url(url).drivername == "sqlite+aiosqlite"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://monitor:pw@db.example:5433/monitor",
        "postgres://monitor:pw@db.example:5433/monitor",
        "postgresql+psycopg2://monitor:pw@db.example:5433/monitor",
        "postgresql+asyncpg://monitor:pw@db.example:5433/monitor",
    ],
)
def test_postgresql_urls_get_asyncpg(url: str) -> None:
    parsed = normalize_url(url)
    assert parsed.drivername == "postgresql+asyncpg"
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
        "monitor",
        "pw",
        "db.example",
        5433,
        "monitor",
    )


@pytest.mark.parametrize("url", ["mysql://root:hunter2@db.example/monitor", "mssql+pyodbc://db/x", "http://x"])
def test_unsupported_databases_raise_a_clear_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_url(url)
    message = str(info.value)
    assert "unsupported database" in message
    assert "sqlite:///" in message and "postgresql://" in message
    assert "hunter2" not in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "url", ["garbage", "not a url at all", "://", "postgresql://monitor:hunter2@db.example:port/monitor"]
)
def test_garbage_urls_raise_a_clear_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalize_url(url)
    message = str(info.value)
    assert message.startswith("invalid database URL")
    assert "sqlite:///" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("schema", ["Bad-Name", "UPPER", "1starts_with_digit", "has space", 'q"uote', "x" * 64, ""])
def test_database_refuses_a_bad_schema(schema: str) -> None:
    with pytest.raises(ConfigError, match="database schema"):
        Database("postgresql://monitor@127.0.0.1/monitor", schema=schema)


def test_database_refuses_a_schema_on_sqlite(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only for PostgreSQL"):
        Database(f"sqlite:///{tmp_path / 'x.sqlite3'}", schema="tenant_a")


async def test_database_accepts_a_good_schema() -> None:
    db = Database("postgresql://monitor@127.0.0.1/monitor", schema="tenant_a2")
    try:
        assert db.schema == "tenant_a2"
        assert db.dialect == "postgresql"
    finally:
        await db.close()


def test_database_rejects_bad_urls_with_config_error() -> None:
    with pytest.raises(ConfigError):
        Database("mysql://root@db.example/monitor")
