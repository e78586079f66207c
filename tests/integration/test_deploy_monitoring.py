"""``deploy/``: the Grafana dashboard queries only metrics a live server exports; the alert rules are valid and fire.

The dashboard is loaded back with grafana-foundation-sdk (the library that wrote it); the rules are checked and
unit-tested with ``promtool`` (Debian's ``prometheus`` package; ``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from grafana_foundation_sdk.cog import plugins
from grafana_foundation_sdk.models import dashboard as dash_m
from grafana_foundation_sdk.models import prometheus as prom_m
from prometheus_client.parser import text_string_to_metric_families

from session_monitor.server import Settings, create_app
from tests.conftest import FakeClock
from tests.helpers import serve_in_thread
from tests.integration.test_stalls import loop_health, stall, sync_body

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DASHBOARD = DEPLOY / "grafana" / "session-monitor.json"
RULES = DEPLOY / "prometheus" / "session-monitor-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "session-monitor-alerts.test.yml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

PROMQL_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "inf", "nan"})
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"(?<![\w.:])([a-zA-Z_:][\w:]*)\s*(\{[^}]*\})?")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")


def metric_selectors(expr: str) -> list[tuple[str, set[str]]]:
    """``(metric name, label names matched)`` of every series selector in a PromQL expression.

    Strings, range/subquery windows and grouping clauses are removed first; what remains that is an identifier not
    followed by ``(`` (a function or aggregation) and not a keyword is a metric name.
    """
    masked = _STRINGS.sub('""', expr)
    masked = re.sub(r"\[[^\]]*\]", "", masked)
    masked = _GROUPING.sub("", masked)
    found = []
    for match in _SELECTOR.finditer(masked):
        name, braces = match.group(1), match.group(2) or ""
        following = masked[match.end() :].lstrip()
        if name.lower() in PROMQL_KEYWORDS or (not braces and following.startswith("(")):
            continue
        found.append((name, set(_MATCHER_LABEL.findall(braces))))
    return found


def test_metric_selectors_parse_what_the_dashboard_writes() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_seconds_bucket{route=~"/x|/y", status!="5.."}[5m])))'
        " / ignoring (route) sum(rate(b_total[$__rate_interval])) or vector(0) > bool 1e3"
    )
    assert metric_selectors(expr) == [("a_seconds_bucket", {"route", "status"}), ("b_total", set())]
    assert metric_selectors('max by (app) (c{state="stale"}) and on (app) d') == [("c", {"state"}), ("d", set())]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, set[str]]]]:
    """Sample name -> (family type, label names) of a live server's ``/metrics`` after some real traffic."""
    db = tmp_path_factory.mktemp("metrics") / "db.sqlite3"
    app = create_app(Settings(database_url=f"sqlite:///{db}", reaper_interval_s=0.2))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as client:
        ids = [client.post("/sessions", json={"app_name": app_name}).json()["session_id"] for app_name in "aab"]
        client.put(f"/sessions/{ids[0]}/status", json={"status": "running", "current_task": "t"}).raise_for_status()
        client.post(f"/sessions/{ids[0]}/heartbeat").raise_for_status()
        client.post(f"/sessions/{ids[1]}/kill").raise_for_status()
        client.delete(f"/sessions/{ids[1]}").raise_for_status()
        client.post("/apps/b/kill-all").raise_for_status()
        client.get("/sessions/does-not-exist")  # a 404 series
        client.post("/agents/a1/sync", json={})  # a 422 series of the sync route
        # An agent's loop health and one stall: the loop-lag, busy, pool and stall series.
        clock = FakeClock()
        body = sync_body(clock, stalls=[stall(clock, 1)], loop=loop_health())
        client.post("/agents/agent-metrics-1/sync", json=body).raise_for_status()
        text = client.get("/metrics").text
    samples: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "route" in sample.labels:
                ROUTES_SEEN.add(sample.labels["route"])
            _type, labels = samples.setdefault(sample.name, (family.type, set()))
            labels.update(sample.labels)
    yield samples


ROUTES_SEEN: set[str] = set()
"""Route templates in the scraped latency series (filled by the ``exported`` fixture)."""


def _route_alternatives(expr: str) -> list[str]:
    """The route templates a ``route=~"a|b"`` matcher names."""
    return [r for m in re.findall(r'route=~"([^"]*)"', expr) for r in m.split("|")]


def _dashboard() -> dash_m.Dashboard:
    plugins.register_default_plugins()  # decode targets as Prometheus queries and panel options by panel type
    return dash_m.Dashboard.from_json(json.loads(DASHBOARD.read_text()))


def _exprs(board: dash_m.Dashboard) -> list[tuple[str, str]]:
    """``(panel title, PromQL)`` of every query of every panel, as the SDK decodes them."""
    found = []
    for panel in board.panels or []:
        if isinstance(panel, dash_m.RowPanel):
            continue
        assert panel.targets, f"panel {panel.title!r} has no query"
        for query in panel.targets:
            assert isinstance(query, prom_m.Dataquery), f"panel {panel.title!r}: not a Prometheus query: {query!r}"
            found.append((str(panel.title), query.expr))
    return found


def test_the_committed_files_are_what_the_generator_writes() -> None:
    out = subprocess.run(
        [sys.executable, str(DEPLOY / "generate.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr


def test_every_dashboard_query_names_a_metric_the_server_exports(
    exported: dict[str, tuple[str, set[str]]],
) -> None:
    exported_routes = ROUTES_SEEN
    board = _dashboard()
    assert board.uid == "panel-session-monitor"
    exprs = _exprs(board)
    assert len(exprs) >= 15
    used = set()
    for title, expr in exprs:
        selectors = metric_selectors(expr)
        assert selectors, f"panel {title!r}: no metric in {expr!r}"
        for name, labels in selectors:
            assert name in exported, f"panel {title!r}: {name} is not exported (exported: {sorted(exported)})"
            kind, known = exported[name]
            if name.endswith(("_bucket", "_sum", "_count")):
                assert kind == "histogram", f"panel {title!r}: {name} is a {kind}, not a histogram's series"
            if name.endswith("_total"):
                assert kind == "counter", f"panel {title!r}: {name} is a {kind}, not a counter's series"
            assert labels <= known, f"panel {title!r}: {name} has no label(s) {labels - known}"
            for alternative in _route_alternatives(expr):
                assert alternative in exported_routes, f"panel {title!r}: no route {alternative} in {exported_routes}"
            used.add(name)
    # Every family the server exports is on the dashboard (a new metric needs a panel, or a reason not to).
    families = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in exported}
    shown = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in used}
    assert families - shown == set()


def test_the_dashboard_json_round_trips_through_the_sdk() -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    original = json.loads(DASHBOARD.read_text())
    again = json.loads(json.dumps(_dashboard(), cls=JSONEncoder))
    assert [p["title"] for p in again["panels"]] == [p["title"] for p in original["panels"]]
    ids = [p["id"] for p in original["panels"]]
    assert len(set(ids)) == len(ids), "panel ids must be unique"


def test_the_alert_rules_name_exported_metrics(exported: dict[str, tuple[str, set[str]]]) -> None:
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {"SessionMonitorNoReaperLeader", "SessionMonitorHigh5xxRate"}
    for rule in rules:
        for name, labels in metric_selectors(rule["expr"]):
            assert name in exported, f"{rule['alert']}: {name} is not exported"
            assert labels <= exported[name][1], f"{rule['alert']}: {name} has no label(s) {labels}"


def test_promtool_accepts_the_rules_and_every_dashboard_query(tmp_path: Path) -> None:
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    # The dashboard's queries as recording rules: promtool parses each one ($__rate_interval is Grafana's).
    recorded = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_title, expr) in enumerate(_exprs(_dashboard()))
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": recorded}]}))
    out = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_prove_the_alerts_fire() -> None:
    out = subprocess.run(
        [PROMTOOL, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    tested = {
        t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"] for t in case["alert_rule_test"]
    }
    alerts = {r["alert"] for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
    assert alerts - tested == set(), "every alert needs a promtool test"
