"""Fixtures of the client unit tests: a fake server, and the process's agent on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from session_monitor import SessionClient
from session_monitor.client import agent as agent_module
from session_monitor.client.agent import Agent
from tests.unit.client import FakeServer


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def agent(server: FakeServer) -> Iterator[Agent]:
    """The process's agent, on the fake server; nothing is left behind for the next test."""
    SessionClient.reset()
    agent_module.reset()
    made = server.agent()
    agent_module._agent = made
    yield made
    server.down = False
    server.release()
    SessionClient.reset()
    agent_module.reset()
