"""A shared-config write, sent on the agent's own loop and HTTP connections (its replicas and failover too).

Run with ``asyncio.run_coroutine_threadsafe`` by :class:`~session_monitor.client.shared.SharedConfig`;
the caller's thread (or loop) only waits for the answer. A refused connection moves on to the next replica
(the request never reached a server, so sending it again cannot apply it twice); a timeout or a 5xx raises
:class:`ServerUnavailable` at once, saying the write may or may not have applied.
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from session_monitor.errors import AuthError, ConfigConflict, ConfigError, ConfigNotFound, ServerUnavailable

if TYPE_CHECKING:
    from session_monitor.client.agent import Agent

_WHO = f"{socket.gethostname()[:60]}:{os.getpid()}"


def _detail(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {"detail": response.text[:200]}


async def send_write(agent: Agent, app: str, key: str, text: str | None, expected: int | None) -> int:
    """PUT (``text``) or DELETE (``None``) one key; returns the new version, applied to the agent's copy."""
    client = agent.http
    if client is None:
        raise ServerUnavailable("the session monitor's agent is not running: nothing was written")
    path = f"/config/{quote(app, safe='')}/{key}"
    headers = {"X-Session-Monitor-Actor": _WHO, "X-Session-Monitor-Agent": agent.agent_id,
               "content-type": "application/json"}  # fmt: skip
    if expected is not None:
        headers["If-Match"] = f'"{expected}"'
    for _attempt in range(len(agent.config.server_urls)):
        url = agent.server_url
        try:
            if text is None:
                response = await client.delete(path, headers=headers)
            else:
                response = await client.put(path, content=text.encode(), headers=headers)
        except httpx.ConnectError as exc:
            if agent.fail_over(url, exc) and agent.server_url != url:
                continue  # never reached a server: the next replica may take it
            raise ServerUnavailable(
                f"session monitor at {url} unreachable ({exc}): config {app!r}/{key!r} was not written"
            ) from None
        except httpx.HTTPError as exc:
            raise ServerUnavailable(
                f"session monitor at {url} did not answer ({type(exc).__name__}): config {app!r}/{key!r} may or may "
                "not have been written"
            ) from None
        return _answer(agent, app, key, text, response)
    raise ServerUnavailable(f"no session monitor reachable: config {app!r}/{key!r} was not written")


def _answer(agent: Agent, app: str, key: str, text: str | None, response: httpx.Response) -> int:
    status = response.status_code
    body = _detail(response)
    detail = body.get("detail", "") if isinstance(body, dict) else ""
    if status == 200:
        version = int(body["version"])
        agent.config_cache.wrote(app, key, text, version, int(body.get("revision", 0)))
        return version
    if status == 412:
        current, value = int(body.get("current_version", 0)), body.get("current_value")
        if current > 0:  # what the server holds is news to this process's copy too
            shown = None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            agent.config_cache.wrote(app, key, shown, current, 0)
        raise ConfigConflict(app, key, _expected(response), current, value)
    if status == 404:
        raise ConfigNotFound(app, key, current_version=int(body.get("current_version", 0) or 0))
    if status in (401, 403):
        raise AuthError(f"session monitor refused the config write ({status}): {detail}", status)
    if status >= 500:
        raise ServerUnavailable(f"session monitor answered {status} ({detail}): config {app!r}/{key!r} not written",
                                status)  # fmt: skip
    raise ConfigError(f"session monitor refused config {app!r}/{key!r} ({status}): {detail}")


def _expected(response: httpx.Response) -> int | None:
    sent = response.request.headers.get("if-match")
    return int(sent.strip('"')) if sent else None
