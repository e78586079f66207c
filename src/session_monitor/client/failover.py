"""Which server an agent talks to: failover between replicas, and whether the server is reachable.

Its log lines are the agent's (``session_monitor.client.agent``): one warning per outage, one line when back.
"""

from __future__ import annotations

import logging
import time

import httpx

logger = logging.getLogger("session_monitor.client.agent")


def server_unreachable(exc: BaseException) -> bool:
    """Whether a failed request means its server (or the way to it) is down, so another replica may serve."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (502, 503, 504)


class ServerUrls:
    """The replicas in the order they are tried, the current one, and those that failed since the last success.

    Both agent loops share it: only the loop that sees a failure first moves on (the other finds the URL
    already changed), so one outage is one step.
    """

    def __init__(self, urls: tuple[str, ...]) -> None:
        self.urls = urls
        self._index = 0
        self.failed: set[str] = set()
        """URLs that failed since the last successful sync (each is tried once, then the agent backs off)."""
        self.online: bool | None = None
        """``None`` until the first sync succeeded or failed."""
        self._offline_since = 0.0

    @property
    def current(self) -> str:
        return self.urls[self._index]

    def can_fail_over(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a reason to try another replica (there is one, and the server is unreachable)."""
        return len(self.urls) > 1 and server_unreachable(exc)

    def advance_from(self, failed_url: str) -> bool:
        """Move to the next URL if ``failed_url`` is still the current one; whether this call moved."""
        if self.current != failed_url:
            return False
        self._index = (self._index + 1) % len(self.urls)
        return True

    def went_offline(self, exc: BaseException, tracked: int) -> None:
        """A sync failed: log it once per outage."""
        if self.online is not False:
            self._offline_since = time.monotonic()
            logger.warning(
                "session monitor at %s unreachable (%s); tracking %d sessions offline, retrying",
                self.current,
                exc or type(exc).__name__,
                tracked,
            )
        self.online = False

    def came_online(self, registered: int) -> None:
        """A sync went through: log the end of an outage."""
        if self.online is False:
            logger.info(
                "session monitor at %s reachable again after %.0f s; %s sessions re-registered",
                self.current,
                time.monotonic() - self._offline_since,
                registered,
            )
        self.online = True
