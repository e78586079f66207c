"""The OpenAPI schema describes the API: schemathesis against a real server, on SQLite and PostgreSQL.

Every operation gets valid and invalid requests derived from ``/openapi.json`` (fixed seed, derandomised,
bounded examples: well under two minutes per store). A request fails the test if its answer is a 5xx, has
a status the operation does not declare, or a body or content type that does not match the declared one.

The server runs with both tokens set and the test sends the admin token, so every route does its work.
Long-polls (``GET /agents/{id}/commands?wait=``) are shortened to ``FUZZ_WAIT_S``: the wait itself is the
feature (up to 60 s) and a few dozen of them would take the run's whole budget; values outside the declared
range are sent as generated.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import schemathesis.specs.openapi.checks
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyStrategyDefinition, Unsatisfiable
from schemathesis.generation import GenerationMode
from schemathesis.schemas import APIOperation

from session_monitor.server import create_app
from session_monitor.server.routes.agents import MAX_WAIT_S
from tests import contract_hooks  # noqa: F401  (format: printable)
from tests.conftest import DatabaseTarget
from tests.helpers import serve_in_thread

# A run over every operation takes 60-130 s on a loaded 2-core machine: past the suite's 120 s per test, where
# pytest-timeout's exception landed inside hypothesis (reported as an "unreliable" operation, not as a timeout).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ADMIN = "admin-contract-token-5c1d"
CLIENT = "client-contract-token-8a2e"
FUZZ_WAIT_S = 0.05
EXAMPLES = int(os.environ.get("SESSION_MONITOR_CONTRACT_EXAMPLES", "25"))
STATEFUL_EXAMPLES = int(os.environ.get("SESSION_MONITOR_CONTRACT_SCENARIOS", "20"))
STATEFUL_SUITES = 4
SEED = 1

CROSS_PARAMETER_RULES = {
    "GET /sessions": "`changed_since` cannot be combined with status, q, limit or offset",
    "GET /stats/timeline": "`window_s / step_s` is at most 2000",
    "POST /sessions/{session_id}/kill": "`at` in the future, at most 7 days ahead; `delay_s` or `at`, not both",
    "POST /apps/{app_name}/kill-all": "`at` in the future, at most 7 days ahead; `delay_s` or `at`, not both",
    "POST /announcements": "`until` in the future, at most 7 days ahead",
    "POST /drain": "`at` lies between now and 7 days ahead (relative to the server's clock)",
    "PUT /config/{app}/{key}": "`If-Match` must name the stored version (else 412)",
    "DELETE /config/{app}/{key}": "`If-Match` must name the stored version (else 412)",
    "POST /config/{app}/{key}/revert": "`If-Match` must name the stored version (else 412)",
}
"""Rules between parameters, which OpenAPI cannot state (they are in the descriptions): there a request valid
parameter by parameter may be refused, so ``positive_data_acceptance`` is not checked."""

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.specs.openapi.checks.status_code_conformance,
    schemathesis.specs.openapi.checks.content_type_conformance,
    schemathesis.specs.openapi.checks.response_schema_conformance,
    schemathesis.specs.openapi.checks.response_headers_conformance,
    schemathesis.specs.openapi.checks.positive_data_acceptance,
    schemathesis.specs.openapi.checks.negative_data_rejection,
    schemathesis.specs.openapi.checks.missing_required_header,
]


def _checks_for(label: str, checks: list[Any]) -> list[Any]:
    if label in CROSS_PARAMETER_RULES:
        return [check for check in checks if check is not schemathesis.specs.openapi.checks.positive_data_acceptance]
    return checks


def _shorten_long_polls(case: schemathesis.Case) -> None:
    if case.path == "/agents/{agent_id}/commands" and isinstance(case.query, dict):
        wait = case.query.get("wait")
        if isinstance(wait, int | float) and not isinstance(wait, bool) and FUZZ_WAIT_S < wait <= MAX_WAIT_S:
            case.query["wait"] = FUZZ_WAIT_S


def _fuzz(operation: APIOperation, mode: GenerationMode) -> str | None:
    """Run one operation's examples; the first failure hypothesis finds (shrunk), or None."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        _shorten_long_polls(case)
        headers = {"Authorization": f"Bearer {ADMIN}", **(case.headers or {})}
        case.call_and_validate(headers=headers, timeout=MAX_WAIT_S + 10, checks=checks)

    checks = _checks_for(operation.label, CHECKS)

    try:
        run()
    except Unsatisfiable:
        if mode is GenerationMode.NEGATIVE:
            return None  # nothing in this operation can be made invalid (no parameters, or free text only)
        return f"{operation.label} ({mode.value}): no valid request could be generated"
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
        return f"{operation.label} ({mode.value}): {exc}"
    return None


# Valid requests on both stores; invalid ones on one: they are refused by validation before any store is reached
# (and the rare one the schema cannot rule out is a valid request to the same code as the positive runs).
@pytest.mark.parametrize(
    ("db_target", "mode"),
    [("sqlite", GenerationMode.POSITIVE), ("postgresql", GenerationMode.POSITIVE), ("sqlite", GenerationMode.NEGATIVE)],
    indirect=["db_target"],
)
def test_api_matches_its_schema(db_target: DatabaseTarget, mode: GenerationMode) -> None:
    app = create_app(db_target.settings(admin_token=ADMIN, client_token=CLIENT))
    with serve_in_thread(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 17
        failures = [failure for op in operations if (failure := _fuzz(op, mode)) is not None]
    assert not failures, f"{len(failures)} of {len(operations)} operations fail:\n\n" + "\n\n".join(failures)


STATEFUL_CHECKS = [
    *CHECKS,
    schemathesis.specs.openapi.checks.ensure_resource_availability,
]
"""Not ``use_after_free``: an ended session stays readable at ``GET /sessions/{id}`` by design (it is history,
with ``state: ended``); ``DELETE /sessions/{id}`` ends it, it does not erase it."""


@pytest.mark.parametrize("db_target", ["postgresql"], indirect=True)
def test_api_workflows_match_the_schema(db_target: DatabaseTarget) -> None:
    """Chains of calls linked by the schema (register, then heartbeat, status, kill, end that session), on
    PostgreSQL: the replicas' store; the single calls above run on both."""
    app = create_app(db_target.settings(admin_token=ADMIN, client_token=CLIENT))
    with serve_in_thread(app) as url:
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")

        class Workflow(schema.as_state_machine()):  # type: ignore[misc]
            def before_call(self, case: schemathesis.Case) -> None:
                _shorten_long_polls(case)

            def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
                return {"headers": {"Authorization": f"Bearer {ADMIN}"}, "timeout": MAX_WAIT_S + 10}

            def validate_response(self, response, case, additional_checks=None, **kwargs):  # type: ignore[no-untyped-def]
                checks = _checks_for(case.operation.label, STATEFUL_CHECKS)
                case.validate_response(response, checks=checks, transport_kwargs=kwargs)

        interrupted = 0
        for suite in range(STATEFUL_SUITES):
            try:
                hypothesis.seed(SEED + suite)(Workflow).run(
                    settings=settings(
                        max_examples=STATEFUL_EXAMPLES,
                        stateful_step_count=6,
                        database=None,
                        deadline=None,
                        # No shrinking: the server's data outlives each scenario, so a replay is not the same run.
                        phases=[Phase.explicit, Phase.generate],
                        suppress_health_check=list(HealthCheck),
                        report_multiple_bugs=False,
                    )
                )
            except FlakyStrategyDefinition:
                # Links feed generated ids (uuid4) back into later steps, so hypothesis may see a replayed
                # prefix draw differently and stop the suite. Not a finding (a failing check raises
                # FailureGroup); the next suite carries on with its own seed.
                interrupted += 1
        assert interrupted < STATEFUL_SUITES, "every stateful suite was cut short: no workflow ran to the end"


def test_openapi_declares_the_error_bodies_the_server_sends() -> None:
    """FastAPI's default 422 (``detail`` as an array) is replaced by ours; every operation lists its errors."""
    document = create_app().openapi()
    components = document["components"]["schemas"]
    assert "HTTPValidationError" not in components
    assert components["ValidationErrorBody"]["properties"]["detail"]["type"] == "string"
    assert components["ErrorBody"]["required"] == ["detail"]
    raw = [key for key in ("ge", "le", "gt", "lt") if f'"{key}":' in json.dumps(document)]
    assert not raw, f"constraints left as pydantic keywords instead of JSON Schema: {raw}"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = set(operation["responses"])
            assert {"400", "413", "421", "503"} <= declared, (method, path, declared)
            if operation.get("parameters") or "requestBody" in operation:
                body = operation["responses"]["422"]["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/ValidationErrorBody"}, (method, path)
            if method in ("post", "put", "delete"):
                assert {"401", "403", "507"} <= declared, (method, path, declared)
            if "{session_id}" in path:
                assert "404" in declared, (method, path)


async def test_requests_of_the_wrong_json_type_are_refused(client: httpx.AsyncClient) -> None:
    """The schema says integer, string date-time: a boolean pid or a number for a time is not silently coerced."""
    for body in ({"app_name": "a", "pid": False}, {"app_name": "a", "pid": "12"}, {"app_name": "a", "user_id": 5}):
        response = await client.post("/sessions", json=body)
        assert response.status_code == 422, (body, response.text)
    # JSON Schema's integer includes 12.0.
    assert (await client.post("/sessions", json={"app_name": "a", "pid": 12.0})).status_code == 200
    agent = {"host": "h", "pid": 1, "started_at": "2026-01-01T00:00:00Z"}
    ended = {"session_id": "s-1", "reason": "closed", "ended_at": 1767225600}
    for ended_at in (1767225600, "1767225600"):
        body = {"agent": agent, "ended": [{**ended, "ended_at": ended_at}]}
        response = await client.post("/agents/agent-0001/sync", json=body)
        assert response.status_code == 422, response.text
    # A query's date-time is text too: digits are not a Unix time.
    assert (await client.get("/sessions", params={"changed_since": "3173490"})).status_code == 422
    assert (await client.post("/agents/agent-0001/sync", json={"agent": agent})).status_code == 200


async def test_app_name_with_a_line_break_is_invalid_not_unrouted(client: httpx.AsyncClient) -> None:
    response = await client.post("/apps/a%0Ab/kill-all")
    assert response.status_code == 422, response.text
    assert "U+000A" in response.json()["detail"]


async def test_method_not_allowed_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    """``GET`` and ``DELETE /sessions/{id}`` live in two routers; the 405's ``Allow`` names both."""
    response = await client.request("OPTIONS", "/sessions/abc")
    assert response.status_code == 405
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "DELETE"}


async def test_a_repeated_query_parameter_is_refused(client: httpx.AsyncClient) -> None:
    """The schema declares one value per parameter; ``?app=a&app=b`` kept ``b`` silently."""
    response = await client.get("/sessions?app=a&app=b&limit=5")
    assert response.status_code == 422, response.text
    assert response.json()["errors"] == [
        {"loc": ["query", "app"], "msg": "given more than once; give it once", "type": "repeated"}
    ]
    assert (await client.get("/sessions?app=a&limit=5")).status_code == 200
