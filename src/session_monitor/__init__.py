"""panel-session-monitor: see, track and kill every live Panel session.

The top level re-exports the client API; the server lives in
``session_monitor.server`` and needs the ``[server]`` extra.
"""

from __future__ import annotations

from session_monitor._version import __version__
from session_monitor.client import ClientConfig, SessionClient, get_agent
from session_monitor.errors import ConfigError, ServerUnavailable, SessionMonitorError, SessionNotFound

__all__ = [
    "ClientConfig",
    "ConfigError",
    "ServerUnavailable",
    "SessionClient",
    "SessionMonitorError",
    "SessionNotFound",
    "__version__",
    "get_agent",
]
