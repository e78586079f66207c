"""panel-session-monitor: see, track and kill every live Panel session.

The top level re-exports the client API; the server lives in
``session_monitor.server`` and needs the ``[server]`` extra.
"""

from __future__ import annotations

from session_monitor.errors import ConfigError, ServerUnavailable, SessionMonitorError, SessionNotFound

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ServerUnavailable",
    "SessionMonitorError",
    "SessionNotFound",
    "__version__",
]
