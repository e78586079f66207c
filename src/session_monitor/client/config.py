"""Client configuration: explicit argument > environment variable > default, resolved in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

from session_monitor import defaults
from session_monitor.errors import ConfigError


@dataclass(frozen=True)
class ClientConfig:
    """How a process's agent reaches the server.

    Attributes:
        server_url: Base URL of the monitor server (``SESSION_MONITOR_URL``, default ``http://127.0.0.1:8000``).
            The first of the list when several replicas are given.
        fallback_urls: Other replicas of the same server (one PostgreSQL): ``SESSION_MONITOR_URL`` may hold a
            comma-separated list. The agent moves to the next URL when its server stops answering.
        client_token: Bearer token for the agent protocol (``SESSION_MONITOR_CLIENT_TOKEN``, default none).
        sync_interval_s: Seconds between syncs when nothing changes; the server may ask for another value
            (``SESSION_MONITOR_SYNC_INTERVAL_S``, default 5).
        flush_delay_s: A change reaches the server at most this long after it happened (default 0.25).
        long_poll_s: Seconds the server holds the command long-poll open (default 25).
        request_timeout_s: Timeout of one sync request (default 5).
    """

    server_url: str = defaults.SERVER_URL
    fallback_urls: tuple[str, ...] = ()
    client_token: str | None = None
    sync_interval_s: float = defaults.SYNC_INTERVAL_S
    flush_delay_s: float = defaults.FLUSH_DELAY_S
    long_poll_s: float = defaults.LONG_POLL_S
    request_timeout_s: float = 5.0
    sync_interval_from_env: bool = False

    @property
    def server_urls(self) -> tuple[str, ...]:
        """Every server URL, in the order the agent tries them."""
        return (self.server_url, *self.fallback_urls)


def parse_urls(value: str) -> tuple[str, ...]:
    """``"http://a:8000, http://b:8000/"`` -> ``("http://a:8000", "http://b:8000")``; duplicates dropped."""
    urls = [part.strip().rstrip("/") for part in value.split(",")]
    urls = [url for url in urls if url]
    if not urls:
        raise ConfigError(f"no server URL in {value!r}")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"server URL {url!r} must start with http:// or https://")
    return tuple(dict.fromkeys(urls))


def float_env(name: str, default: float) -> tuple[float, bool]:
    """A positive number from the environment, or ``default``; and whether the environment gave it."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default, False
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be positive")
    return value, True


def resolve_config(server_url: str | None = None, client_token: str | None = None) -> ClientConfig:
    """Build the configuration: an explicit argument wins over the environment, which wins over the default.

    ``server_url`` (or ``SESSION_MONITOR_URL``) may list several replicas, comma-separated.
    """
    urls = parse_urls(server_url or os.environ.get("SESSION_MONITOR_URL") or defaults.SERVER_URL)
    token = client_token or os.environ.get("SESSION_MONITOR_CLIENT_TOKEN") or None
    interval, from_env = float_env("SESSION_MONITOR_SYNC_INTERVAL_S", defaults.SYNC_INTERVAL_S)
    flush, _ = float_env("SESSION_MONITOR_FLUSH_DELAY_S", defaults.FLUSH_DELAY_S)
    return ClientConfig(
        server_url=urls[0],
        fallback_urls=urls[1:],
        client_token=token,
        sync_interval_s=interval,
        flush_delay_s=flush,
        sync_interval_from_env=from_env,
    )
