"""The monitor server (needs the ``[server]`` extra): ``create_app(Settings(...))``."""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import sqlalchemy  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        f"the session-monitor server needs the [server] extra ({exc.name} is missing): "
        "pip install 'panel-session-monitor[server]'"
    ) from exc

from session_monitor.server.app import create_app
from session_monitor.server.settings import Settings

__all__ = ["Settings", "create_app"]
