"""Server settings: one ``Settings`` object, read from ``SESSION_MONITOR_*`` variables and CLI flags."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
from pathlib import Path

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from session_monitor import defaults
from session_monitor.server.tokens import TokenSpec, TokenTable, build_table, load_tokens_file

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server reachable from this machine only."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _machine_names() -> set[str]:
    """This machine's host names, as a browser on the network would type them."""
    names = {socket.gethostname().lower()}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn().lower())
    return {name for name in names if name}


class Settings(BaseSettings):
    """Every server setting; each has an environment twin ``SESSION_MONITOR_<NAME>``."""

    # hide_input_in_errors: a refused token (e.g. too short) must not be echoed by `serve`'s error message.
    model_config = SettingsConfigDict(env_prefix="SESSION_MONITOR_", extra="ignore", hide_input_in_errors=True)

    host: str = Field(default=defaults.API_HOST, description="Address the API binds to.")
    port: int = Field(default=defaults.API_PORT, ge=0, le=65535)
    database_url: str | None = Field(
        default=None, description="sqlite:///PATH or postgresql://...; default SQLite under data_dir."
    )
    database_schema: str | None = Field(default=None, description="PostgreSQL schema to use (default: public).")
    data_dir: Path = Field(default=Path(defaults.DATA_DIR), description="Folder of the default SQLite database.")
    admin_token: SecretStr | None = Field(default=None, description="Bearer token for admin actions.")
    client_token: SecretStr | None = Field(default=None, description="Bearer token for registering and updating.")
    tokens: dict[str, TokenSpec] = Field(
        default_factory=dict,
        description='Named tokens, JSON {"owner": {"token": "...", "role": "viewer|operator|admin", "apps": [...]}}; '
        "apps (operator only) limits kills to those apps.",
    )
    tokens_file: Path | None = Field(
        default=None, description="A JSON file of named tokens, the shape of SESSION_MONITOR_TOKENS (merged with it)."
    )
    insecure: bool = Field(default=False, description="Allow a non-loopback bind without tokens.")
    stale_after_s: float = Field(default=defaults.STALE_AFTER_S, gt=0)
    expire_after_s: float = Field(default=defaults.EXPIRE_AFTER_S, gt=0)
    reaper_interval_s: float = Field(default=defaults.REAPER_INTERVAL_S, gt=0)
    history_retention_s: float = Field(default=defaults.HISTORY_RETENTION_S, gt=0)
    audit_retention_s: float = Field(default=defaults.AUDIT_RETENTION_S, gt=0)
    sync_interval_s: float = Field(
        default=defaults.SYNC_INTERVAL_S, gt=0, le=60, description="How often agents sync (they are told)."
    )
    process_lost_after_s: float = Field(
        default=defaults.PROCESS_LOST_AFTER_S,
        gt=0,
        le=3600,
        description="End an agent's sessions as process_lost this long after its long-poll dropped without a new "
        "poll or sync.",
    )
    max_sync_body_bytes: int = Field(
        default=defaults.MAX_SYNC_BODY_BYTES, ge=1024, description="Body limit of an agent sync."
    )
    max_body_bytes: int = Field(default=defaults.MAX_BODY_BYTES, ge=1024)
    trusted_origins: list[str] = Field(
        default_factory=list, description="Browser origins allowed to send state-changing requests."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description='Extra Host header names to answer (e.g. behind a reverse proxy); ["*"] answers any.',
    )
    open_reads: bool = Field(
        default=False,
        description="Leave GET /sessions, /sessions/{id} and /metrics open with tokens set (the prototype's monitor).",
    )
    run_reaper: bool = Field(default=True, description="Run the reaper inside this server process.")
    max_stalls_per_agent: int = Field(default=1000, ge=1, le=1_000_000, description="Stalls kept per agent.")
    max_stalls_total: int = Field(default=100_000, ge=1, le=100_000_000, description="Stalls kept in all.")
    max_stalls_per_minute: int = Field(
        default=120, ge=1, le=100_000, description="New stalls an agent may send per minute; beyond, refused."
    )

    _table: TokenTable = PrivateAttr()

    @model_validator(mode="after")
    def _token_table(self) -> Settings:
        named = dict(self.tokens)
        if self.tokens_file is not None:
            for owner, spec in load_tokens_file(self.tokens_file).items():
                if owner in named:
                    raise ValueError(f"token owner {owner!r} is named in both SESSION_MONITOR_TOKENS and the file")
                named[owner] = spec
        self._table = build_table(named, self.admin_token, self.client_token)
        return self

    @property
    def token_table(self) -> TokenTable:
        """Every token (admin, client, named) and its grant."""
        return self._table

    config_history_retention_s: float = Field(
        default=defaults.CONFIG_HISTORY_RETENTION_S,
        gt=0,
        description="Shared-config versions older than this are dropped (a key's current version is always kept).",
    )
    config_history_versions: int = Field(
        default=defaults.CONFIG_HISTORY_VERSIONS,
        ge=1,
        le=10_000_000,
        description="Most versions kept per shared-config key; older ones are dropped.",
    )

    @field_validator("database_schema")
    @classmethod
    def _schema_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ValueError("a PostgreSQL schema name: lower-case letters, digits and _, at most 63")
        return value

    @field_validator("admin_token", "client_token")
    @classmethod
    def _token_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() == "":
            return None
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("tokens must be at least 16 characters long")
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / defaults.SQLITE_FILENAME).resolve()}"

    @property
    def host_allowlist(self) -> frozenset[str] | None:
        """Host header names this server answers, or ``None`` for any (only when ``allowed_hosts`` has ``*``).

        Always on, tokens or not: a page on an attacker's domain that resolves to this server (DNS
        rebinding) must get nothing, not even a 401 it could probe with. Served: loopback names, the bind
        address (for a wildcard bind, this machine's names), ``allowed_hosts``, and any IP literal (which
        cannot be rebound; the guard admits those itself).
        """
        if "*" in self.allowed_hosts:
            return None
        names = set(LOOPBACK_NAMES) | {h.lower() for h in self.allowed_hosts}
        if self.host in ("0.0.0.0", "::", ""):
            names |= _machine_names()
        else:
            names.add(self.host.lower())
        return frozenset(names)

    def bind_problem(self) -> str | None:
        """Why binding to ``host`` would be unsafe, or ``None``."""
        if is_loopback(self.host) or self.insecure or self._table.staff_guarded:
            return None
        return (
            f"refusing to listen on {self.host} without SESSION_MONITOR_ADMIN_TOKEN (or role tokens): anyone who can "
            "reach this address could list and kill sessions. Set an admin token (and a client token), "
            "bind to 127.0.0.1, or pass --insecure if the network is trusted."
        )
