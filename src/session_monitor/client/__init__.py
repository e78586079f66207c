"""The client side: what Panel apps import. Never imports the server's dependencies."""

from __future__ import annotations

from session_monitor.client.agent import Agent, get_agent
from session_monitor.client.config import ClientConfig
from session_monitor.client.shared import SharedConfig, shared_config
from session_monitor.client.tracker import SessionClient

__all__ = ["Agent", "ClientConfig", "SessionClient", "SharedConfig", "get_agent", "shared_config"]
