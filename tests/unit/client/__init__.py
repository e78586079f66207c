"""Unit tests of the client; :class:`FakeServer` answers the agent protocol through ``httpx.MockTransport``.

Every sync body is validated with the server's own wire model (``SyncRequest``) and refused with 422
if invalid, as the real server would, so a client-side validation gap shows up here too.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
import pydantic

from session_monitor.client.agent import Agent
from session_monitor.client.config import ClientConfig
from session_monitor.protocol import SyncRequest

SERVER_URL = "http://monitor.test"


def tiny_config(**overrides: Any) -> ClientConfig:
    values: dict[str, Any] = {
        "server_url": SERVER_URL,
        "flush_delay_s": 0.02,
        "sync_interval_s": 0.2,
        "long_poll_s": 0.3,
        "request_timeout_s": 2.0,
    }
    values.update(overrides)
    return ClientConfig(**values)


class FakeServer:
    """The server side of the agent protocol, in memory; the handler runs on the agent's event loop.

    - ``down``: every request fails as if nothing listened on the port.
    - ``hold``: a sync is recorded, then held in flight until ``release``.
    - ``resync_next``: the next sync is answered with ``resync: true`` (the server did not know the agent).
    - ``push(command)``: delivered by the command long-poll; ``sync_commands``: added to every sync answer.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.syncs: list[dict[str, Any]] = []
        """Every sync body the server received (and accepted), in order."""
        self.answered_resync: list[bool] = []
        self.refused: list[str] = []
        """422 answers: why each sync body was refused."""
        self.failed_syncs = 0
        self.in_flight = 0
        self.max_in_flight = 0
        """Syncs of one agent answered at the same time: the server would apply them in any order."""
        self.polls = 0
        self.down = False
        self.resync_next = False
        self.sync_commands: list[Any] = []
        self.sync_interval_s: float | None = None
        """Sent in every sync answer when set: the interval the server asks agents to use."""
        self.headers: list[httpx.Headers] = []
        self._pending: list[Any] = []
        self._cursor = 0
        self._gate = threading.Event()
        self._gate.set()

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def agent(self, **overrides: Any) -> Agent:
        return Agent(tiny_config(**overrides), transport=self.transport())

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def push(self, *commands: Any) -> None:
        with self.lock:
            self._pending.extend(commands)

    def sessions_sent(self, session_id: str) -> list[dict[str, Any]]:
        """Every state of ``session_id`` the agent sent, oldest first."""
        with self.lock:
            return [s for body in self.syncs for s in body["sessions"] if s["session_id"] == session_id]

    def ends_sent(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for body in self.syncs for e in body["ended"]]

    async def handler(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.headers.append(request.headers)
        if request.url.path.endswith("/sync"):
            return await self._sync(request)
        if request.url.path.endswith("/commands"):
            return await self._commands(request)
        return httpx.Response(404, json={"detail": "not found"})

    async def _sync(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            with self.lock:
                self.failed_syncs += 1
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content)
        try:
            SyncRequest.model_validate(body)
        except pydantic.ValidationError as exc:
            with self.lock:
                self.refused.append(str(exc))
            return httpx.Response(422, json={"detail": str(exc)})
        with self.lock:
            self.syncs.append(body)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            while not self._gate.is_set():
                await asyncio.sleep(0.005)
        finally:
            with self.lock:
                self.in_flight -= 1
        with self.lock:
            resync, self.resync_next = self.resync_next, False
            self.answered_resync.append(resync)
            commands = list(self.sync_commands)
        answer = {"resync": resync, "commands": commands, "server_time": "2026-01-01T00:00:00+00:00"}
        if self.sync_interval_s is not None:
            answer["sync_interval_s"] = self.sync_interval_s
        return httpx.Response(200, json=answer)

    async def _commands(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.polls += 1
        deadline = time.monotonic() + min(float(request.url.params.get("wait", 0)), 0.3)
        while True:
            if self.down:
                raise httpx.ConnectError("connection refused", request=request)
            with self.lock:
                found, self._pending = self._pending, []
            if found or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.005)
        self._cursor += len(found)
        return httpx.Response(200, json={"commands": found, "cursor": self._cursor})
