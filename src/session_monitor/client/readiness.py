"""The readiness port of a Panel process: whether a load balancer may send it new sessions.

Served on the agent's own thread and event loop (never Panel's IOLoop), on ``SESSION_MONITOR_READY_PORT``
(off when unset) at ``SESSION_MONITOR_READY_ADDRESS`` (127.0.0.1). One port, two protocols, told apart by
the first line the client sends:

- **HTTP** (``GET /ready`` or any path, ``HEAD``): ``200 ready`` or ``503 draining until <deadline>``.
- **HAProxy agent-check** (any other line, e.g. HAProxy's ``agent-send "haproxy\\n"``, or nothing within
  :data:`AGENT_WAIT_S`): ``ready`` or ``drain``, one line. ``drain`` puts the server in HAProxy's DRAIN
  state: no new sessions, but requests carrying its stickiness cookie still reach it, so the open pages
  keep working until the deadline; ``ready`` lifts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from session_monitor.client.config import env_setting, integer
from session_monitor.client.draining import DrainWatch

logger = logging.getLogger(__name__)

AGENT_WAIT_S = 1.0
"""An agent-check client that sends nothing gets its answer after this long."""

MAX_REQUEST_BYTES = 8192
"""A request's head is read up to this; more is not read."""

_HTTP_METHODS = (b"GET ", b"HEAD ")


def ready_port() -> int | None:
    """``SESSION_MONITOR_READY_PORT`` (1-65535), or ``None`` when unset."""

    def parse(text: str) -> int:
        port = integer(text)
        if not 1 <= port <= 65535:
            raise ValueError("must be a TCP port, 1-65535")
        return port

    return env_setting("SESSION_MONITOR_READY_PORT", None, parse)


def ready_address() -> str:
    return env_setting("SESSION_MONITOR_READY_ADDRESS", "127.0.0.1", str)


def http_answer(watch: DrainWatch, head: bool = False) -> bytes:
    drain = watch.current
    if drain is None:
        status, body = "200 OK", "ready\n"
    else:
        status, body = "503 Service Unavailable", f"draining until {drain.deadline.isoformat()}\n"
    lines = [
        f"HTTP/1.1 {status}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body.encode())}",
        "Cache-Control: no-store",
        "Connection: close",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + (b"" if head else body.encode())


def agent_answer(watch: DrainWatch) -> bytes:
    return b"ready\n" if watch.ready else b"drain\n"


class ReadinessServer:
    """The listening socket on the agent's loop; :meth:`start` logs and gives up when the port is taken."""

    def __init__(self, watch: DrainWatch, address: str, port: int) -> None:
        self.watch, self.address, self.port = watch, address, port
        self._server: asyncio.Server | None = None

    async def start(self) -> bool:
        try:
            self._server = await asyncio.start_server(self._handle, self.address, self.port, reuse_address=True)
        except OSError as exc:
            logger.error("readiness port %s:%s could not be opened: %s", self.address, self.port, exc)
            return False
        logger.info("readiness on %s:%s (HTTP /ready and HAProxy agent-check)", self.address, self.port)
        return True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                first = await asyncio.wait_for(reader.readline(), AGENT_WAIT_S)
            except (TimeoutError, ValueError):
                first = b""
            if first.startswith(_HTTP_METHODS):
                await _skip_headers(reader)
                writer.write(http_answer(self.watch, head=first.startswith(b"HEAD ")))
            else:
                writer.write(agent_answer(self.watch))
            await writer.drain()
        except (ConnectionError, TimeoutError):
            pass
        except Exception:
            logger.exception("readiness request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _skip_headers(reader: asyncio.StreamReader) -> None:
    """Read the request's headers up to the blank line (bounded), so closing does not reset the connection."""
    read = 0
    while read < MAX_REQUEST_BYTES:
        line = await asyncio.wait_for(reader.readline(), AGENT_WAIT_S)
        read += len(line)
        if line in (b"\r\n", b"\n", b""):
            return


async def open_readiness(watch: DrainWatch) -> ReadinessServer | None:
    """The readiness port of ``SESSION_MONITOR_READY_PORT`` opened on the running loop; ``None`` when unset,
    or when it could not be opened (logged; the agent works on without it)."""
    try:
        port = ready_port()
        address = ready_address()
    except Exception as exc:  # a bad setting must not stop the agent
        logger.error("readiness port not opened: %s", exc)
        return None
    if port is None:
        return None
    server = ReadinessServer(watch, address, port)
    return server if await server.start() else None
