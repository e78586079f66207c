"""The dashboard's API client raises the package's own errors, one kind per way a call can fail.

Against a real server app (tokens set), a port nobody listens on, and a real HTTP server that answers 502 as a
reverse proxy in front of a stopped monitor does.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest

from session_monitor.dashboard.client import ApiClient
from session_monitor.errors import AuthError, RequestFailed, ServerUnavailable, SessionMonitorError
from tests.conftest import DatabaseTarget
from tests.helpers import free_port, serving
from tests.integration.test_security import ADMIN, CLIENT


async def test_refused_credentials_are_an_auth_error_and_other_refusals_a_request_failed(
    db_target: DatabaseTarget,
) -> None:
    async with serving(db_target.settings(admin_token=ADMIN, client_token=CLIENT)) as (app, _):
        transport = httpx.ASGITransport(app=app)

        async def kill(token: str | None, session_id: str = "s-1") -> RequestFailed:
            api = ApiClient("http://127.0.0.1", token, transport=transport)
            try:
                with pytest.raises(RequestFailed) as raised:
                    await api.kill(session_id, actor="ops")
            finally:
                await api.aclose()
            return raised.value

        no_token, client_token, unknown = await kill(None), await kill(CLIENT), await kill(ADMIN, "nobody")
    assert type(no_token) is AuthError and no_token.status_code == 401
    assert type(client_token) is AuthError and client_token.status_code == 403
    assert "admin token" in str(client_token)  # the server's own detail
    assert type(unknown) is RequestFailed and unknown.status_code == 404 and "nobody" in str(unknown)
    assert all(isinstance(e, SessionMonitorError) for e in (no_token, client_token, unknown))


async def test_a_server_nobody_listens_on_is_unavailable() -> None:
    api = ApiClient(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ServerUnavailable, match="cannot reach the monitor server") as raised:
            await api.agents()
    finally:
        await api.aclose()
    assert raised.value.status_code is None


class _BadGateway(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><body>502 Bad Gateway</body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def bad_gateway() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BadGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_a_5xx_answer_is_unavailable(bad_gateway: str) -> None:
    api = ApiClient(bad_gateway)
    try:
        with pytest.raises(ServerUnavailable, match=r"\(502\)") as raised:
            await api.agents()
    finally:
        await api.aclose()
    assert raised.value.status_code == 502
