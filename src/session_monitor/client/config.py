"""Client configuration: explicit argument > environment variable > default, resolved in one place.

:func:`env_setting` is how client code (agent, liveness, pool) reads a ``SESSION_MONITOR_*`` variable:
an explicit argument wins, else the variable (parsed), else the default; a value that does not parse
raises :class:`~session_monitor.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from session_monitor import defaults
from session_monitor.errors import ConfigError

T = TypeVar("T")

Source = Literal["argument", "environment", "default"]


def env_setting(name: str, default: T, parse: Callable[[str], T], explicit: T | None = None) -> T:
    """``explicit`` if given, else the environment variable ``name`` parsed with ``parse``, else ``default``.

    ``parse`` raises ``ValueError`` (or :class:`ConfigError`) on bad text; the error is re-raised as a
    :class:`ConfigError` that names the variable and its value. An empty variable counts as unset.
    Explicit arguments are the caller's to check (they have their own names).
    """
    return env_setting_source(name, default, parse, explicit)[0]


def env_setting_source(name: str, default: T, parse: Callable[[str], T], explicit: T | None = None) -> tuple[T, Source]:
    """:func:`env_setting`, also saying where the value came from (``argument``, ``environment``, ``default``)."""
    if explicit is not None:
        return explicit, "argument"
    raw = os.environ.get(name)
    if not raw:
        return default, "default"
    try:
        return parse(raw), "environment"
    except ValueError as exc:
        message = str(exc)
        if name not in message:
            message = f"{name}={raw!r}: {message}"
        raise ConfigError(message) from None


def finite_float(text: str) -> float:
    """A finite number (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def positive_float(text: str) -> float:
    """A finite number greater than zero (seconds, mostly)."""
    value = finite_float(text)
    if value <= 0:
        raise ValueError("must be a positive number")
    return value


def integer(text: str) -> int:
    """A whole number."""
    try:
        return int(text)
    except ValueError:
        raise ValueError("not a whole number") from None


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


def resolve_config(server_url: str | None = None, client_token: str | None = None) -> ClientConfig:
    """Build the configuration: an explicit argument wins over the environment, which wins over the default.

    ``server_url`` (or ``SESSION_MONITOR_URL``) may list several replicas, comma-separated.
    """
    explicit_urls = parse_urls(server_url) if server_url else None
    urls = env_setting("SESSION_MONITOR_URL", parse_urls(defaults.SERVER_URL), parse_urls, explicit_urls)
    token = env_setting("SESSION_MONITOR_CLIENT_TOKEN", None, str, client_token or None)
    interval, source = env_setting_source("SESSION_MONITOR_SYNC_INTERVAL_S", defaults.SYNC_INTERVAL_S, positive_float)
    flush = env_setting("SESSION_MONITOR_FLUSH_DELAY_S", defaults.FLUSH_DELAY_S, positive_float)
    return ClientConfig(
        server_url=urls[0],
        fallback_urls=urls[1:],
        client_token=token,
        sync_interval_s=interval,
        flush_delay_s=flush,
        sync_interval_from_env=source == "environment",
    )
