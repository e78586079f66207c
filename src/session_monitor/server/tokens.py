"""Roles and tokens: the named-token file and environment JSON, checked at startup, and the table requests match.

``SESSION_MONITOR_TOKENS`` (JSON) and ``SESSION_MONITOR_TOKENS_FILE`` (a JSON file) have one shape, owner → grant::

    {"alice": {"token": "…at least 16 characters…", "role": "operator", "apps": ["sales", "hr"]},
     "grafana": {"token": "…", "role": "viewer"}}

A refused entry names its owner, never its token. Nothing here imports FastAPI: ``Settings`` builds the table.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from session_monitor.protocol import MAX_ACTOR, MAX_APP_NAME

MIN_TOKEN_LENGTH = 16
RESERVED_OWNERS = frozenset({"admin", "client", "anonymous"})
"""Owners of the legacy tokens and of a caller without one: a named token may not take these names."""


class Role(enum.IntEnum):
    """What a route needs. ``PUBLIC`` and ``CLIENT`` stand apart; ``VIEWER < OPERATOR < ADMIN``."""

    PUBLIC = 0
    """Anyone (``/healthz``)."""
    CLIENT = 1
    """The client token (or an admin token): what Panel processes call. Open while no client token is set."""
    VIEWER = 2
    OPERATOR = 3
    ADMIN = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, name: str) -> Role:
        """A staff role by name (``viewer``, ``operator``, ``admin``); ``ValueError`` otherwise."""
        role = cls.__members__.get(name.strip().upper())
        if role is None or role < cls.VIEWER:
            raise ValueError(f"unknown role {name[:40]!r}: one of viewer, operator, admin")
        return role


@dataclass(frozen=True)
class Grant:
    """One token's owner, role and apps (``None``: every app). The secret itself is kept apart, in the table."""

    owner: str
    role: Role
    apps: frozenset[str] | None = None


CLIENT_GRANT = Grant("client", Role.CLIENT)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenTable:
    """Every configured token and its grant; :meth:`match` compares the presented token with all of them."""

    def __init__(self, entries: Iterable[tuple[str, Grant]]) -> None:
        # Digests, not the tokens: every comparison is then of 32 bytes, so not even a token's length shows in timing.
        self._entries = [(_digest(secret), grant) for secret, grant in entries]

    @property
    def staff_guarded(self) -> bool:
        """Whether any role token is set: staff routes are open (the prototype's way) until one is."""
        return any(grant.role >= Role.VIEWER for _, grant in self._entries)

    @property
    def client_guarded(self) -> bool:
        return any(grant.role == Role.CLIENT for _, grant in self._entries)

    @property
    def grants(self) -> list[Grant]:
        return [grant for _, grant in self._entries]

    def match(self, presented: str | None) -> Grant | None:
        """The grant of ``presented``: every token is compared in constant time, without an early exit that would
        tell by timing which one (or how many) matched."""
        if presented is None:
            return None
        candidate = _digest(presented)
        found: Grant | None = None
        for secret, grant in self._entries:
            if hmac.compare_digest(candidate, secret):
                found = grant
        return found


class TokenSpec(BaseModel):
    """One named token as configured."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    token: SecretStr
    role: Literal["viewer", "operator", "admin"]
    apps: list[str] | None = Field(default=None, description="Operator only: the apps it may act on.")


def load_tokens_file(path: Path) -> dict[str, TokenSpec]:
    """The named tokens of a JSON file; ``ValueError`` says what is wrong (never a token)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read the tokens file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"the tokens file {path} is not JSON ({type(exc).__name__} at {exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"the tokens file {path} must hold a JSON object of owner → {{token, role, apps}}")
    specs: dict[str, TokenSpec] = {}
    for owner, value in raw.items():
        try:
            specs[owner] = TokenSpec.model_validate(value)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in exc.errors())
            raise ValueError(f"the token of {owner[:MAX_ACTOR]!r} in {path}: {problems}") from None
    return specs


def _grant(owner: str, spec: TokenSpec) -> Grant:
    if not owner.strip() or len(owner) > MAX_ACTOR or not owner.isprintable():
        raise ValueError(f"token owner {owner[:MAX_ACTOR]!r}: 1 to {MAX_ACTOR} printable characters")
    if owner in RESERVED_OWNERS:
        raise ValueError(f"token owner {owner!r} is reserved (the legacy tokens' and anonymous callers' name)")
    if len(spec.token.get_secret_value()) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the token of {owner!r} is shorter than {MIN_TOKEN_LENGTH} characters")
    role = Role.parse(spec.role)
    if spec.apps is not None and role != Role.OPERATOR:
        raise ValueError(f"the token of {owner!r}: apps limit an operator only, not a {spec.role}")
    if spec.apps is not None and not all(0 < len(app) <= MAX_APP_NAME for app in spec.apps):
        raise ValueError(f"the token of {owner!r}: app names are 1 to {MAX_APP_NAME} characters")
    return Grant(owner, role, frozenset(spec.apps) if spec.apps is not None else None)


def build_table(named: Mapping[str, TokenSpec], admin: SecretStr | None, client: SecretStr | None) -> TokenTable:
    """The table of every token; ``ValueError`` (naming the owner) on a short, reused or misconfigured token."""
    entries: list[tuple[str, Grant]] = []
    if admin is not None:
        entries.append((admin.get_secret_value(), Grant("admin", Role.ADMIN)))
    if client is not None:
        entries.append((client.get_secret_value(), CLIENT_GRANT))
    for owner, spec in named.items():
        entries.append((spec.token.get_secret_value(), _grant(owner, spec)))
    seen: dict[str, str] = {}
    for secret, grant in entries:
        if secret in seen:
            raise ValueError(f"the tokens of {seen[secret]!r} and {grant.owner!r} are the same: give each its own")
        seen[secret] = grant.owner
    return TokenTable(entries)
