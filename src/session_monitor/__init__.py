"""panel-session-monitor: see, track and kill every live Panel session.

The top level re-exports the client API; the server lives in
``session_monitor.server`` and needs the ``[server]`` extra.

The client names load at their first use: the pool's worker processes import
``session_monitor.pool.worker``, which runs this file, and must not import the
client agent or httpx.
"""

from __future__ import annotations

import typing

from session_monitor._version import __version__
from session_monitor.errors import (
    ConfigConflict,
    ConfigError,
    ServerUnavailable,
    SessionMonitorError,
    SessionNotFound,
)

if typing.TYPE_CHECKING:
    from session_monitor.client import ClientConfig, SessionClient, SharedConfig, get_agent, shared_config

__all__ = [
    "ClientConfig",
    "ConfigConflict",
    "ConfigError",
    "ServerUnavailable",
    "SessionClient",
    "SessionMonitorError",
    "SessionNotFound",
    "SharedConfig",
    "__version__",
    "get_agent",
    "shared_config",
]

_FROM_CLIENT = frozenset({"ClientConfig", "SessionClient", "SharedConfig", "get_agent", "shared_config"})


def __getattr__(name: str) -> typing.Any:
    if name in _FROM_CLIENT:
        from session_monitor import client

        value = getattr(client, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_FROM_CLIENT})
