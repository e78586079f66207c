"""Bad and random input on every endpoint (hypothesis), on SQLite and the real PostgreSQL.

Properties, for every request:
- never a 5xx;
- every 4xx answer is JSON with a non-empty string ``detail``;
- a request that is not answered 2xx leaves every row of ``sessions`` and ``audit_log`` as it was.

One app (and one database) per test function; hypothesis drives it through a
single event loop of the test's own (``asyncio.Runner``), so the app's
lifespan is entered once per test, not once per example.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from session_monitor.server import create_app
from session_monitor.server.routes.sessions import MAX_CLEANUP_MINUTES
from session_monitor.store.models import audit_log, sessions
from tests.conftest import DatabaseTarget

ADMIN = "admin-secret-7f3a9c1e5b2d"
CLIENT = "client-secret-4e8b2a6d0c9f"
WRONG = "wrong-secret-1a2b3c4d5e6f"
ODD_APP = "team/β app?x=1#frag"  # a stored app name with / ? # and non-ASCII

Snapshot = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]

# Few examples per test: both databases and every test together stay well under a minute.
FEW = settings(
    max_examples=int(os.environ.get("SESSION_MONITOR_TEST_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- the app under test ---------------------------------------------------------------------------


@dataclass
class Harness:
    runner: asyncio.Runner
    app: FastAPI
    client: httpx.AsyncClient
    live_ids: list[str]
    ended_id: str
    requests: int = 0

    def snapshot(self) -> Snapshot:
        def read(conn: sa.Connection) -> Snapshot:
            rows = conn.execute(sa.select(sessions).order_by(sessions.c.session_id)).all()
            audit = conn.execute(sa.select(audit_log).order_by(audit_log.c.id)).all()
            return [tuple(r) for r in rows], [tuple(r) for r in audit]

        result: Snapshot = self.runner.run(self.app.state.store.db.read(read))
        return result

    def send(self, method: str, url: str, *, content: bytes | None = None, headers: Any = None) -> httpx.Response:
        return self.runner.run(self.client.request(method, url, content=content, headers=headers))

    def check(self, method: str, url: str, *, content: bytes | None = None, headers: Any = None) -> httpx.Response:
        """Send one request and assert the three properties."""
        before = self.snapshot()
        response = self.send(method, url, content=content, headers=headers)
        self.requests += 1
        described = f"{method} {url[:300]!r} body={(content or b'')[:300]!r} headers={headers!r}"
        assert response.status_code < 500, f"{response.status_code} {response.text[:500]} for {described}"
        if 400 <= response.status_code < 500:
            assert response.headers.get("content-type", "").startswith("application/json"), described
            body = response.json()
            assert isinstance(body, dict), described
            detail = body.get("detail")
            assert isinstance(detail, str) and detail.strip(), f"{body!r} for {described}"
        if not response.is_success:
            assert self.snapshot() == before, f"{response.status_code} changed stored rows: {described}"
        return response


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextlib.contextmanager
def harness(db_target: DatabaseTarget, *, tokens: bool = True) -> Iterator[Harness]:
    """One app with a few sessions (live, running, kill requested, ended) and audit entries stored."""
    overrides = {"admin_token": ADMIN, "client_token": CLIENT} if tokens else {}
    with asyncio.Runner() as runner:
        app = create_app(db_target.settings(**overrides))
        stack = contextlib.AsyncExitStack()
        runner.run(stack.enter_async_context(app.router.lifespan_context(app)))
        try:
            transport = httpx.ASGITransport(app=app)
            client = httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")
            runner.run(stack.enter_async_context(client))
            h = Harness(runner, app, client, [], "")
            admin = auth(ADMIN)
            for app_name, user in (("alpha", "alice"), ("alpha", None), (ODD_APP, "bob"), ("gamma", "carol")):
                body = json.dumps({"app_name": app_name, "user_id": user, "host": "web-1", "pid": 4242}).encode()
                response = h.send(
                    "POST", "/sessions", content=body, headers={**admin, "content-type": "application/json"}
                )
                assert response.status_code == 200, response.text
                h.live_ids.append(response.json()["session_id"])
            running = json.dumps({"status": "running", "current_task": "crunch numbers"}).encode()
            seeded = [
                ("PUT", f"/sessions/{h.live_ids[0]}/status", running),
                ("POST", f"/sessions/{h.live_ids[1]}/kill", b'{"reason": "seeded kill"}'),
                ("POST", f"/apps/{quote(ODD_APP, safe='')}/kill-all", None),
                ("DELETE", "/sessions/stale?older_than_minutes=60", None),
                ("DELETE", f"/sessions/{h.live_ids[3]}", None),
            ]
            for method, url, content in seeded:
                response = h.send(method, url, content=content, headers={**admin, "content-type": "application/json"})
                assert response.status_code == 200, (url, response.text)
            h.ended_id = h.live_ids.pop()
            rows, audit = h.snapshot()
            assert len(rows) == 4 and len(audit) == 3
            yield h
        finally:
            runner.run(stack.aclose())


# -- strategies ------------------------------------------------------------------------------------

SPECIAL_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "😀",
    "😀" * 201,
    "x" * 201,
    "h" * 256,
    "t" * 501,
    "z" * 32,
    "z" * 33,
    "\u202e",
    "\n",
    "a\nb",
    "running\n",
    "\t",
    "\x1b[2J",
    "\x7f",
    "\x85",
    "\ufeff",
    "\u0378",
    "\uffff",
    "a/b?c#d",
    "%00",
    "%2F",
    "..",
    "' OR 1=1 --",
    "\\",
    "%",
    "_",
    "running",
    "idle",
    "Running",
    "alpha",
    ODD_APP,
]

nasty_text = st.one_of(
    st.sampled_from(SPECIAL_TEXT),
    st.text(max_size=30),
    st.text(st.characters(codec=None, categories=["Cc", "Cs", "Co", "Cn", "Cf", "Zl", "Zs", "So"]), max_size=8),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=180, max_size=600),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63, -(2**63) - 1, 1e308, 0.5, -0.0]),
)
json_scalars = st.one_of(st.none(), st.booleans(), numbers, nasty_text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4),
    max_leaves=12,
)

RAW_BODIES = [
    b"",
    b"{",
    b"}",
    b"null",
    b"[]",
    b"{}",
    b'"\\ud800"',
    b"\xff\xfe\x00",
    b'{"app_name": "\xff"}',
    b'{"app_name": "a", "app_name": "\\u0000"}',
    b'{"app_name": "a"}{"app_name": "b"}',
    b'{"pid": ' + b"9" * 5000 + b', "app_name": "a"}',
    b'{"status": NaN}',
    b'{"status": 1e999}',
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"app_name=alpha&status=running",
    b"\x00" * 64,
]


def encode_json(value: Any) -> bytes:
    return json.dumps(value).encode()  # ensure_ascii: lone surrogates and NUL travel as \\u escapes


def bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes | None]:
    """Bodies of the right shape with bad or random values, bodies of random shape, and broken bytes."""
    field_values = {name: st.one_of(good, nasty_text, json_values) for name, good in fields.items()}
    return st.one_of(
        st.fixed_dictionaries({}, optional=field_values).map(encode_json),
        json_values.map(encode_json),
        st.sampled_from(RAW_BODIES),
        st.binary(max_size=64),
        st.none(),
    )


content_types = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "application/problem+json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        None,
    ]
)
tokens = st.sampled_from([ADMIN, ADMIN, ADMIN, CLIENT, None, WRONG])


def encode_segment(text: str) -> str:
    """Percent-encode arbitrary text (lone surrogates included) as one path segment or query value."""
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


RAW_SEGMENTS = ["%00", "%2F", "a%2Fb", "%3F", "%23", "%2E%2E", "%FF", "%ED%A0%80", "x" * 5000, "%25", "stale", "%20"]


def segments(existing: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(existing),
        nasty_text.map(encode_segment),
        st.sampled_from(RAW_SEGMENTS),
        st.text(alphabet="ABCabc012-_.:", min_size=1, max_size=140),
    )


def headers_with(token: str | None, content_type: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    headers = auth(token)
    if content_type is not None:
        headers["content-type"] = content_type
    headers.update(extra or {})
    return headers


def query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{encode_segment(k)}={encode_segment(v)}" for k, v in pairs)


# -- the properties ----------------------------------------------------------------------------------


def test_register_with_bad_bodies(db_target: DatabaseTarget) -> None:
    with harness(db_target) as h:
        fields = {
            "app_name": st.sampled_from(["alpha", "new app"]),
            "user_id": st.sampled_from(["dora", None]),
            "host": st.sampled_from(["web-2"]),
            "pid": st.integers(0, 2**31 - 1),
        }

        @FEW
        @given(body=bodies(fields), content_type=content_types, token=tokens)
        def run(body: bytes | None, content_type: str | None, token: str | None) -> None:
            before = h.snapshot()
            response = h.check("POST", "/sessions", content=body, headers=headers_with(token, content_type))
            if response.is_success:  # stored exactly as sent, nothing else touched
                sent = json.loads(body or b"")
                rows = h.snapshot()[0]
                new = [r for r in rows if r not in before[0]]
                assert len(rows) == len(before[0]) + 1 and len(new) == 1
                assert all(r in rows for r in before[0])
                assert new[0][1] == sent["app_name"] and new[0][2] == sent.get("user_id")

        run()
        assert h.requests > 0


def test_status_update_with_bad_bodies(db_target: DatabaseTarget) -> None:
    with harness(db_target) as h:
        fields = {
            "status": st.sampled_from(["running", "idle", "busy-2"]),
            "current_task": st.sampled_from(["load data", None]),
        }

        @FEW
        @given(
            sid=segments([*h.live_ids, h.ended_id]),
            body=bodies(fields),
            content_type=content_types,
            token=tokens,
        )
        def run(sid: str, body: bytes | None, content_type: str | None, token: str | None) -> None:
            h.check("PUT", f"/sessions/{sid}/status", content=body, headers=headers_with(token, content_type))

        run()


actor_headers = st.one_of(
    st.none(),
    st.sampled_from(["ops", " ", "a" * 150, "\x85", "\xa0", "é" * 120]),
    st.text(st.characters(max_codepoint=0xFF), max_size=120),
)


def test_kills_with_bad_input(db_target: DatabaseTarget) -> None:
    with harness(db_target) as h:
        app_names = st.one_of(
            st.sampled_from(["alpha", ODD_APP, "no-such-app"]).map(encode_segment),
            nasty_text.map(encode_segment),
            st.sampled_from(RAW_SEGMENTS + ["a/b", "a%2Fkill-all", ""]),
        )

        @FEW
        @given(
            target=st.one_of(
                segments([*h.live_ids, h.ended_id]).map(lambda s: f"/sessions/{s}/kill"),
                app_names.map(lambda a: f"/apps/{a}/kill-all"),
            ),
            body=bodies({"reason": st.sampled_from(["maintenance", None])}),
            content_type=content_types,
            token=tokens,
            actor=actor_headers,
        )
        def run(target: str, body: bytes | None, content_type: str | None, token: str | None, actor: Any) -> None:
            extra = {} if actor is None else {"x-session-monitor-actor": actor.encode("latin-1")}
            h.check("POST", target, content=body, headers=headers_with(token, content_type, extra))

        run()


def test_session_paths_with_random_ids(db_target: DatabaseTarget) -> None:
    with harness(db_target) as h:

        @FEW
        @given(
            sid=segments([*h.live_ids, h.ended_id]),
            action=st.sampled_from(
                [
                    ("GET", ""),
                    ("DELETE", ""),
                    ("POST", "/heartbeat"),
                    ("GET", "/heartbeat"),
                    ("PATCH", ""),
                    ("OPTIONS", ""),
                    ("POST", ""),
                    ("PUT", "/kill"),
                ]
            ),
            token=tokens,
        )
        def run(sid: str, action: tuple[str, str], token: str | None) -> None:
            method, suffix = action
            response = h.check(method, f"/sessions/{sid}{suffix}", headers=auth(token))
            if (method, suffix) == ("GET", "") and sid in (*h.live_ids, h.ended_id):
                # Reads need the admin token once one is set: the client token is refused, no token or a wrong one too.
                if token == ADMIN:
                    assert response.status_code == 200 and response.json()["session_id"] == sid
                else:
                    assert response.status_code == (403 if token == CLIENT else 401)

        run()
        # Unknown ids are 404 with a JSON detail, even when they cannot exist.
        for sid in ("no-such-session", "x" * 129, "%00", "a%2Fb%3Fc%23d"):
            for method, suffix in (("GET", ""), ("DELETE", ""), ("POST", "/heartbeat"), ("POST", "/kill")):
                response = h.check(method, f"/sessions/{sid}{suffix}", headers=auth(ADMIN))
                assert response.status_code == 404, (method, sid, response.status_code)


LIST_PARAMS = ["limit", "offset", "status", "app", "q", "user", "host", "reason", "action", "actor"]


def test_listings_with_random_queries(db_target: DatabaseTarget) -> None:
    with harness(db_target) as h:
        values = st.one_of(
            nasty_text,
            numbers.map(str),
            st.sampled_from(["1", "0", "-1", "10000", "10001", "100000", "100001", "1e3", "9" * 5000, "stale", "kill"]),
        )

        @FEW
        @given(
            path=st.sampled_from(["/sessions", "/history", "/audit"]),
            pairs=st.lists(st.tuples(st.one_of(st.sampled_from(LIST_PARAMS), nasty_text), values), max_size=4),
            token=tokens,
        )
        def run(path: str, pairs: list[tuple[str, str]], token: str | None) -> None:
            response = h.check("GET", f"{path}?{query(pairs)}", headers=auth(token))
            if response.is_success:
                body = response.json()
                key = "entries" if path == "/audit" else "sessions"
                assert isinstance(body[key], list) and isinstance(body["total"], int)

        run()


def test_cleanup_with_bad_ages(db_target: DatabaseTarget) -> None:
    with harness(db_target) as h:
        ages = st.one_of(
            st.integers().map(str),
            st.sampled_from([0, -1, 1, MAX_CLEANUP_MINUTES, MAX_CLEANUP_MINUTES + 1, 2**63]).map(str),
            st.floats(allow_nan=True, allow_infinity=True).map(repr),
            nasty_text,
            st.sampled_from(["", " 5", "5 ", "+5", "0x10", "1e3", "5.0", "٥", "9" * 5000, "true"]),
        )

        @FEW
        @given(age=ages, token=tokens)
        def run(age: str, token: str | None) -> None:
            response = h.check(
                "DELETE", f"/sessions/stale?older_than_minutes={encode_segment(age)}", headers=auth(token)
            )
            if response.is_success:
                assert token == ADMIN
                minutes = float(age)
                assert 1 <= minutes <= MAX_CLEANUP_MINUTES and math.isfinite(minutes), age

        run()


header_values = st.one_of(
    st.binary(max_size=40),
    st.text(st.characters(max_codepoint=0xFF), max_size=40).map(lambda s: s.encode("latin-1")),
    st.sampled_from(
        [
            b"",
            b"http://[",
            b"http://]",
            b"null",
            b"https://evil.example",
            b"http://127.0.0.1",
            b"cross-site",
            b"same-origin",
            b"\xb2",
            b"9" * 5000,
            b"-1",
            b"localhost",
            b"[::1",
            b"127.0.0.1:99999",
            ADMIN.encode(),
            b"Bearer " + ADMIN.encode(),
            b"Bearer " + CLIENT.encode() + b"\x00",
            b"application/json",
        ]
    ),
)
GUARDED_HEADERS = ["authorization", "x-session-monitor-actor", "content-type", "origin", "sec-fetch-site", "host"]


@pytest.mark.parametrize("with_tokens", [True, False], ids=["tokens", "no-tokens"])
def test_random_headers(db_target: DatabaseTarget, with_tokens: bool) -> None:
    with harness(db_target, tokens=with_tokens) as h:
        sid = h.live_ids[-1]
        targets = [
            ("POST", "/sessions", b'{"app_name": "alpha"}'),
            ("PUT", f"/sessions/{sid}/status", b'{"status": "running"}'),
            ("POST", f"/sessions/{sid}/heartbeat", None),
            ("POST", f"/sessions/{sid}/kill", b'{"reason": "r"}'),
            ("POST", "/apps/alpha/kill-all", None),
            ("DELETE", "/sessions/stale?older_than_minutes=600", None),
            ("DELETE", f"/sessions/{h.ended_id}", None),
            ("GET", "/sessions", None),
            ("GET", "/history", None),
            ("GET", "/audit", None),
            ("GET", "/healthz", None),
            ("GET", "/metrics", None),
            ("GET", "/openapi.json", None),
        ]

        # Found by this test (each was a 500): always tried, besides the random ones.
        @example(target=targets[0], chosen={"origin": b"http://["})
        @example(target=targets[1], chosen={"content-length": b"\xb2"})
        @example(target=targets[3], chosen={"content-length": b"9" * 5000})
        @FEW
        @given(
            target=st.sampled_from(targets),
            chosen=st.dictionaries(st.sampled_from([*GUARDED_HEADERS, "content-length"]), header_values, max_size=4),
        )
        def run(target: tuple[str, str, bytes | None], chosen: dict[str, bytes]) -> None:
            method, url, content = target
            headers = {"content-type": "application/json", "authorization": f"Bearer {ADMIN}", **chosen}
            h.check(method, url, content=content, headers=headers)

        run()
