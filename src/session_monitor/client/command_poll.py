"""The agent's command long-poll: kills and drains at once, notices, and the changes of the shared config it follows.

``GET /agents/{id}/commands?after=&wait=`` (with ``config_after`` and ``config_epoch`` once a sync registered
the config apps the process follows). A new follow ends the poll in flight (:attr:`Agent.repoll`), so the next
one asks with it at once instead of waiting out the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from session_monitor.client import notices

logger = logging.getLogger("session_monitor.client.agent")


async def poll_commands(agent: Any) -> None:
    """The long-poll loop of ``agent`` (an :class:`~session_monitor.client.agent.Agent`, which imports this)."""
    assert agent._client is not None
    client = agent._client
    wait_s = agent.config.long_poll_s
    while not agent._stopping.is_set():
        url = agent.server_url
        config_params, sent = agent.config_cache.poll_params()
        agent.repoll.clear()
        request = asyncio.ensure_future(
            client.get(
                f"/agents/{agent.agent_id}/commands",
                params={"after": agent._cursor, "wait": wait_s, "notices": notices.board().rev, **config_params},
                timeout=wait_s + agent.config.request_timeout_s,
            )
        )
        repoll = asyncio.ensure_future(agent.repoll.wait())
        try:
            await asyncio.wait((request, repoll), return_when=asyncio.FIRST_COMPLETED)
        finally:
            repoll.cancel()
            if not request.done():
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await request
        if request.cancelled():
            continue
        try:
            response = request.result()
            response.raise_for_status()
            data: dict[str, Any] = response.json()
            cursor = int(data.get("cursor", agent._cursor))
            found = list(data.get("commands", ()))
        except Exception as exc:
            logger.debug("agent %s: command poll failed: %s", agent.agent_id, exc)
            moved = agent.fail_over(url, exc)
            await asyncio.sleep(0.05 if moved else min(2.0, agent._sync_interval_s))
            continue
        agent._cursor = cursor
        agent.config_cache.received(data, sent, sync=False)
        for command in found:
            agent.sessions.dispatch(command)
        notices.board().receive(data)
        if found and agent.sessions.facts_changed:
            agent._wake_now()  # a drain: sync now, its answer says what the drain is
