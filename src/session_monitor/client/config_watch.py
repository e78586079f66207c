"""Where a shared-config watcher runs: on the IOLoop of the Panel session that registered it, until it ends.

Registered inside a Panel session (a callback or the app's body), a watcher runs on that session's IOLoop
with the session's document current, like any of its callbacks, and is forgotten when the session is
destroyed. Registered on a thread running an asyncio loop (outside Panel), it runs on that loop. Anywhere
else it runs on the agent's thread and must return quickly (it delays the agent's next request).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable

from session_monitor.client.config_cache import Scheduler


def _on_agent_thread(fn: Callable[[], None]) -> bool:
    fn()
    return True


def current_scheduler() -> tuple[Scheduler, Callable[[Callable[[], None]], None] | None]:
    """How to run a watcher registered here, and how to hear of its owner's end (``None``: it never ends)."""
    if "panel" in sys.modules:
        from session_monitor.client import config_panel

        found = config_panel.session_scheduler()
        if found is not None:
            return found
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _on_agent_thread, None

    def on_loop(fn: Callable[[], None]) -> bool:
        if loop.is_closed():
            return False
        try:
            loop.call_soon_threadsafe(fn)
        except RuntimeError:  # closed in between
            return False
        return True

    return on_loop, None
