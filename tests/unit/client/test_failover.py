"""Several server URLs: configuration, and the agent moving to another replica when its own stops answering."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from session_monitor import ConfigError
from session_monitor.client.agent import Agent, SessionRecord, server_unreachable
from session_monitor.client.config import ClientConfig, resolve_config
from tests.helpers import wait_until
from tests.unit.client import FakeServer, tiny_config

URL_A, URL_B = "http://replica-a.test", "http://replica-b.test"


# -- configuration ------------------------------------------------------------------------------------------


def test_one_url_keeps_the_old_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SESSION_MONITOR_URL", raising=False)
    config = resolve_config("http://monitor.internal:8000/")
    assert (config.server_url, config.fallback_urls) == ("http://monitor.internal:8000", ())
    assert config.server_urls == ("http://monitor.internal:8000",)


def test_environment_lists_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_MONITOR_URL", " http://a:8000/ ,http://b:8000,, http://a:8000")
    config = resolve_config()
    assert config.server_url == "http://a:8000"
    assert config.server_urls == ("http://a:8000", "http://b:8000")


def test_argument_list_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_MONITOR_URL", "http://env:8000")
    assert resolve_config("https://x:1,https://y:2").server_urls == ("https://x:1", "https://y:2")


@pytest.mark.parametrize("value", ["http://a:8000,ftp://b", " , ", "a:8000"])
def test_bad_url_lists_are_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SESSION_MONITOR_URL", value)
    with pytest.raises(ConfigError):
        resolve_config()


def test_which_failures_mean_another_replica_may_serve() -> None:
    request = httpx.Request("POST", f"{URL_A}/agents/x/sync")

    def status(code: int) -> httpx.HTTPStatusError:
        return httpx.HTTPStatusError("refused", request=request, response=httpx.Response(code, request=request))

    assert server_unreachable(httpx.ConnectError("refused", request=request))
    assert server_unreachable(httpx.RemoteProtocolError("server disconnected", request=request))
    assert server_unreachable(httpx.ReadTimeout("timed out", request=request))
    assert all(server_unreachable(status(code)) for code in (502, 503, 504))
    # The server answered and refused: another replica of the same database would refuse too.
    assert not any(server_unreachable(status(code)) for code in (400, 401, 404, 413, 422, 500))
    assert not server_unreachable(ValueError("bad JSON"))


# -- the agent moving between replicas ----------------------------------------------------------------------


class Replicas:
    """Two fake replicas behind one transport, routed by host name."""

    def __init__(self) -> None:
        self.a, self.b = FakeServer(), FakeServer()

    async def handler(self, request: httpx.Request) -> httpx.Response:
        server = self.a if request.url.host == httpx.URL(URL_A).host else self.b
        return await server.handler(request)

    def agent(self, urls: tuple[str, ...] = (URL_A, URL_B)) -> Agent:
        config: ClientConfig = tiny_config(server_url=urls[0], fallback_urls=urls[1:])
        return Agent(config, transport=httpx.MockTransport(self.handler))


@pytest.fixture
def replicas() -> Iterator[Replicas]:
    pair = Replicas()
    yield pair
    pair.a.down = pair.b.down = False


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    made: list[Agent] = []
    yield made
    for agent in made:
        agent.stop(timeout_s=2.0)


def _record(session_id: str) -> SessionRecord:
    return SessionRecord(session_id, "app", None, started_at=datetime.now(UTC))


def _session_ids(server: FakeServer) -> set[str]:
    with server.lock:
        return {s["session_id"] for body in server.syncs for s in body["sessions"]}


def test_agent_moves_to_the_next_replica_with_its_sessions_and_commands(
    replicas: Replicas, agents: list[Agent]
) -> None:
    agent = replicas.agent()
    agents.append(agent)
    kills: list[str | None] = []
    agent.track(_record("s1"), lambda reason: None)
    agent.track(_record("s2"), kills.append)
    wait_until(lambda: _session_ids(replicas.a) == {"s1", "s2"})
    assert agent.server_url == URL_A
    assert not replicas.b.syncs

    replicas.a.down = True
    # The next sync after the failure goes to B and is a full one: B's database learns every live session.
    wait_until(lambda: _session_ids(replicas.b) == {"s1", "s2"})
    assert agent.server_url == URL_B
    with replicas.b.lock:
        assert any(body["full"] for body in replicas.b.syncs)
    # The command long-poll moved too: a kill queued on B arrives.
    wait_until(lambda: replicas.b.polls >= 1)
    replicas.b.push({"id": 1, "kind": "kill", "session_id": "s2", "reason": "moved"})
    wait_until(lambda: kills == ["moved"])


def test_agent_stays_on_the_replica_that_answers(replicas: Replicas, agents: list[Agent]) -> None:
    """A failed replica coming back does not pull the agent back: it stays where it is served."""
    agent = replicas.agent()
    agents.append(agent)
    agent.track(_record("s1"), lambda reason: None)
    wait_until(lambda: agent.syncs >= 1)
    replicas.a.down = True
    wait_until(lambda: agent.server_url == URL_B and agent.online)
    replicas.a.down = False
    synced = agent.syncs
    wait_until(lambda: agent.syncs >= synced + 3)
    assert agent.server_url == URL_B


def test_all_replicas_down_then_one_back(replicas: Replicas, agents: list[Agent]) -> None:
    replicas.a.down = replicas.b.down = True
    agent = replicas.agent()
    agents.append(agent)
    agent.track(_record("s1"), lambda reason: None)
    wait_until(lambda: replicas.a.failed_syncs >= 2 and replicas.b.failed_syncs >= 2)
    assert not agent.online
    replicas.b.down = False
    wait_until(lambda: agent.online and agent.server_url == URL_B)
    wait_until(lambda: "s1" in _session_ids(replicas.b))


def test_one_url_never_moves(replicas: Replicas, agents: list[Agent]) -> None:
    agent = replicas.agent(urls=(URL_A,))
    agents.append(agent)
    agent.track(_record("s1"), lambda reason: None)
    wait_until(lambda: agent.syncs >= 1)
    replicas.a.down = True
    wait_until(lambda: replicas.a.failed_syncs >= 2)
    assert agent.server_url == URL_A
    assert not replicas.b.syncs and replicas.b.polls == 0


def test_refusal_is_not_a_reason_to_move(agents: list[Agent]) -> None:
    """A replica that answers 401 is reachable: moving would hide a configuration error behind a failover."""
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url.host))
        return httpx.Response(401, json={"detail": "bad token"})

    agent = Agent(tiny_config(server_url=URL_A, fallback_urls=(URL_B,)), transport=httpx.MockTransport(handler))
    agents.append(agent)
    agent.track(_record("s1"), lambda reason: None)
    wait_until(lambda: seen.count(httpx.URL(URL_A).host) >= 3)
    assert agent.server_url == URL_A
    assert httpx.URL(URL_B).host not in seen
