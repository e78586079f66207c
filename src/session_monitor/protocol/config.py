"""Shared app configuration: keys, versions and history on the REST API, follows and changes in the agent protocol.

A value is any JSON document of at most :data:`MAX_CONFIG_VALUE_BYTES` (compact UTF-8). Every write makes a new
version of its key (1, 2, ...; 0 means "absent"); a deleted key keeps its version, so a compare-and-set against
it still works. ``revision`` orders every change of every key of the deployment: agents follow it as a cursor.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from session_monitor.protocol.common import MAX_APP_NAME, PRINTABLE_FORMAT, JSONInteger, _Request
from session_monitor.text import printable

MAX_CONFIG_VALUE_BYTES = 256 * 1024
"""Largest value of one key, as compact JSON in UTF-8."""

MAX_CONFIG_KEY = 200
CONFIG_KEY_PATTERN = r"^[A-Za-z0-9_.:-]+$"
"""Keys are identifiers (they go in URL paths): letters, digits and ``_ . : -``."""

CONFIG_APP_PATTERN = r"^[^/]+$"
"""A config app name is one URL path segment: no ``/``."""

MAX_CONFIG_APPS = 64
"""Most config apps one agent follows."""

CONFIG_ACTIONS = ("set", "delete", "revert")

ConfigAppName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_APP_NAME,
        pattern=CONFIG_APP_PATTERN,
        json_schema_extra={"format": PRINTABLE_FORMAT},
    ),
    AfterValidator(printable),
]
ConfigKey = Annotated[str, Field(min_length=1, max_length=MAX_CONFIG_KEY, pattern=CONFIG_KEY_PATTERN)]
Revision = Annotated[int, Field(ge=0, le=2**53 - 1), JSONInteger]


class ConfigEntry(BaseModel):
    """One key's current value (``GET /config/{app}/{key}``; its version is also the ``ETag``)."""

    app: str
    key: str
    value: Any = Field(description="The JSON value.")
    version: int = Field(description="1 for the first write, one more for every write since.")
    revision: int = Field(description="Orders every change of every key of the deployment (agents' cursor).")
    updated_at: datetime
    updated_by: str = Field(description="Who wrote this version (an operator, or `client:<host>:<pid>`).")


class ConfigList(BaseModel):
    """``GET /config/{app}``: every live key of the app, sorted by key."""

    app: str
    entries: list[ConfigEntry]


class ConfigVersion(BaseModel):
    """One version in a key's history."""

    version: int
    value: Any = Field(description="The value this version set (null for a delete).")
    deleted: bool
    action: Literal["set", "delete", "revert"]
    reverted_to: int | None = Field(default=None, description="For a revert: the version whose value it restored.")
    actor: str
    at: datetime


class ConfigHistory(BaseModel):
    """``GET /config/{app}/{key}/history``: versions newest first, as far back as the retention keeps them."""

    app: str
    key: str
    current_version: int
    versions: list[ConfigVersion]
    total: int


class ConfigRevert(_Request):
    """``POST /config/{app}/{key}/revert``: write the value of an earlier ``version`` as a new version."""

    version: Annotated[int, Field(ge=1, le=2**31 - 1), JSONInteger]


class ConfigConflictBody(BaseModel):
    """412: the ``If-Match`` version is not the stored one (nothing was written)."""

    detail: str
    current_version: int = Field(description="The version stored now (0: the key does not exist).")
    current_value: Any = Field(default=None, description="The value stored now (null when absent or deleted).")


class ConfigFollow(_Request):
    """In an agent sync: the config apps the process uses, its follow ``epoch`` and its change cursor.

    The server remembers the apps (and the epoch) on the agent and pushes their changes on the command
    long-poll; ``after`` 0 asks for every key of every followed app (``config_full`` in the answer).
    """

    apps: list[ConfigAppName] = Field(max_length=MAX_CONFIG_APPS)
    epoch: Annotated[int, Field(ge=0, le=2**31 - 1), JSONInteger]
    after: Revision = 0


class ConfigChange(BaseModel):
    """A key's state after a change, as pushed to agents (deleted keys too, with ``deleted: true``)."""

    app: str
    key: str
    value: Any = None
    version: int
    deleted: bool
    revision: int


class ConfigChanges(BaseModel):
    """The config part of a sync answer or of a command long-poll's answer."""

    config: list[ConfigChange] = Field(default_factory=list)
    config_cursor: int | None = Field(default=None, description="Pass back as `after` / `config_after`.")
    config_full: bool = Field(default=False, description="`config` holds every live key of the followed apps.")
    config_epoch: int | None = Field(default=None, description="The follow epoch these changes are for.")


__all__ = [
    "CONFIG_ACTIONS",
    "CONFIG_APP_PATTERN",
    "CONFIG_KEY_PATTERN",
    "MAX_CONFIG_APPS",
    "MAX_CONFIG_KEY",
    "MAX_CONFIG_VALUE_BYTES",
    "ConfigAppName",
    "ConfigChange",
    "ConfigChanges",
    "ConfigConflictBody",
    "ConfigEntry",
    "ConfigFollow",
    "ConfigHistory",
    "ConfigKey",
    "ConfigList",
    "ConfigRevert",
    "ConfigVersion",
    "Revision",
]
