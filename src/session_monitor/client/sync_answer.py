"""What an agent does with a sync answer once its sessions are acknowledged.

Stalls sent (refused ones too: the server said why), the server's sync interval, the policies and the other
processes' counts (session limits and exemptions), pending kills (the fallback path), the active notices and this
process's drain. The :class:`~session_monitor.client.agent.Agent` calls :func:`apply` on its own loop.
"""

from __future__ import annotations

import logging
from typing import Any

from session_monitor.client import notices

logger = logging.getLogger("session_monitor.client.agent")


def apply(agent: Any, data: dict[str, Any], monitor: Any, stalls: Any) -> None:
    """Apply ``data`` (the answer) to ``agent``; ``monitor``/``stalls``: the loop monitor and the stalls sent."""
    if monitor is not None and stalls is not None:
        monitor.watchdog.sent(stalls)  # refused ones too: the server said why, resending would not help
        if data.get("stalls_error"):
            logger.warning("agent %s: %s", agent.agent_id, data["stalls_error"])
    interval = data.get("sync_interval_s")
    if isinstance(interval, int | float) and interval > 0 and not agent.config.sync_interval_from_env:
        agent._sync_interval_s = float(interval)
    if agent.limits.update(data.get("policies"), data.get("others")):
        agent.sessions.exemptions_changed()
    for command in data.get("commands", ()):
        agent.sessions.dispatch(command)
    notices.board().receive(data)
    agent.draining.update(data.get("drain"))
