"""Write the Grafana dashboard and the Prometheus alert rules for ``/metrics``, from the tables below.

    python deploy/generate.py          # rewrite deploy/grafana/session-monitor.json and deploy/prometheus/*.yml
    python deploy/generate.py --check  # exit 1 if the committed files differ from what this writes

A panel is one line in ``ROWS``; an alert is one entry in ``ALERTS`` (with its ``promtool test rules`` cases in
``deploy/prometheus/session-monitor-alerts.test.yml``). Neither the client nor the server imports this: it needs
the dev group (``grafana-foundation-sdk``, PyYAML).

The server counts live sessions from the database at each scrape, so every replica reports the same
``session_monitor_sessions`` series: queries take ``max`` over instances for it, never ``sum``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships no stubs; types-PyYAML is not a dependency
from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_m
from grafana_foundation_sdk.models import dashboard as dash_m

DEPLOY = Path(__file__).resolve().parent
DASHBOARD_PATH = DEPLOY / "grafana" / "session-monitor.json"
RULES_PATH = DEPLOY / "prometheus" / "session-monitor-alerts.yml"
DATASOURCE = dash_m.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
KILL_ROUTES = "/sessions/{session_id}/kill|/apps/{app_name:path}/kill-all"
SYNC_ROUTES = "/agents/{agent_id}/sync|/sessions/{session_id}/heartbeat|/sessions/{session_id}/status"


@dataclass(frozen=True)
class Panel:
    title: str
    exprs: tuple[tuple[str, str], ...]
    """``(PromQL, legend)`` pairs, one target each."""
    unit: str = "short"
    kind: str = "timeseries"
    """``timeseries``, ``stacked`` (a stacked time series) or ``stat``."""
    width: int = 8
    description: str = ""


def p95(metric: str, by: str = "", selector: str = "") -> str:
    """The 95th percentile of a histogram over the rate window, optionally per label(s) ``by``."""
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile(0.95, sum by ({group}) (rate({metric}_bucket{{{selector}}}[{RATE}])))"


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("Sessions", (
        Panel("Live sessions", (("sum(max by (app, state) (session_monitor_sessions))", "live"),), kind="stat",
              width=4),
        Panel("Stale sessions", (('sum(max by (app) (session_monitor_sessions{state="stale"}))', "stale"),),
              kind="stat", width=4, description="Sessions whose agent or heartbeat has been silent too long."),
        Panel("Live sessions by app and state", (
            ("max by (app, state) (session_monitor_sessions)", "{{app}} {{state}}"),), kind="stacked", width=16),
        Panel("Sessions registered / s", (
            (f"sum(rate(session_monitor_sessions_registered_total[{RATE}]))", "registered"),), unit="ops"),
        Panel("Sessions ended / s, by reason", (
            (f"sum by (reason) (rate(session_monitor_sessions_ended_total[{RATE}]))", "{{reason}}"),),
              unit="ops", kind="stacked"),
        Panel("Stale sessions by app", (('max by (app) (session_monitor_sessions{state="stale"})', "{{app}}"),)),
    )),
    ("Kills", (
        Panel("Kill requests / s, by scope", (
            (f"sum by (scope) (rate(session_monitor_kill_requests_total[{RATE}]))", "{{scope}}"),), unit="ops",
              width=12, description="scope=app counts each session an app-wide kill reached."),
        Panel("Kill request latency (p95)", (
            (p95("session_monitor_http_request_duration_seconds", "route", f'route=~"{KILL_ROUTES}"'), "{{route}}"),),
              unit="s", width=12),
    )),
    ("Agents and sync", (
        Panel("Heartbeats / s", ((f"sum(rate(session_monitor_heartbeats_total[{RATE}]))", "heartbeats"),),
              unit="ops"),
        Panel("Sync latency (p95)", (
            (p95("session_monitor_http_request_duration_seconds", "route", f'route=~"{SYNC_ROUTES}"'), "{{route}}"),),
              unit="s"),
        Panel("Database writes per transaction (p95)", ((p95("session_monitor_db_write_batch_size"), "p95"),)),
        Panel("Leftovers of ended sessions, by kind", (
            ("max by (kind) (session_monitor_leftovers)", "{{kind}}"),), kind="stacked",
              description="Threads, periodic callbacks and pool jobs still running 10 s after their session ended."),
    )),
    ("HTTP", (
        Panel("Requests / s, by status", (
            (f"sum by (status) (rate(session_monitor_http_request_duration_seconds_count[{RATE}]))", "{{status}}"),),
              unit="reqps", kind="stacked"),
        Panel("5xx ratio", ((
            f'sum(rate(session_monitor_http_request_duration_seconds_count{{status=~"5.."}}[{RATE}]))'
            f" / sum(rate(session_monitor_http_request_duration_seconds_count[{RATE}]))", "5xx"),),
              unit="percentunit"),
        Panel("Latency by route (p95)", (
            (p95("session_monitor_http_request_duration_seconds", "route"), "{{route}}"),), unit="s"),
    )),
    ("Reaper and replicas", (
        Panel("Reaper leaders", (("sum(session_monitor_reaper_leader)", "leaders"),), kind="stat", width=4,
              description="Exactly 1 when healthy: the process that runs the reaper."),
        Panel("Reaper leader by instance", (("session_monitor_reaper_leader", "{{instance}}"),), width=10),
        Panel("Reaper passes / s", ((f"sum(rate(session_monitor_reaper_passes_total[{RATE}]))", "passes"),),
              unit="ops", width=5),
        Panel("Replica wake-ups / s", ((f"sum(rate(session_monitor_replica_wakeups_total[{RATE}]))", "wake-ups"),),
              unit="ops", width=5, description="Agents' long-polls woken by another replica's kill (PostgreSQL)."),
    )),
    ("Panel processes: loop health and stalls", (
        Panel("Loop lag p99 by process", ((
            f"histogram_quantile(0.99, sum by (le, host, pid) (rate(session_monitor_loop_lag_seconds_bucket[{RATE}])))",
            "{{host}}:{{pid}}"),), unit="s", width=8,
              description="How late a probe scheduled every 100 ms on each Panel process's IOLoop ran."),
        Panel("Loop busy share by process", (
            ("max by (host, pid) (session_monitor_loop_busy_ratio)", "{{host}}:{{pid}}"),), unit="percentunit",
              width=8),
        Panel("Loop stalls / s by process", (
            (f"sum by (host, pid) (rate(session_monitor_loop_stalls_total[{RATE}]))", "{{host}}:{{pid}}"),
            (f"sum(rate(session_monitor_loop_stalls_dropped_total[{RATE}]))", "dropped"),), unit="ops", width=8,
              description="A stall: the loop did not run its probe for SESSION_MONITOR_STALL_S (see GET /stalls)."),
        Panel("Panel thread pool: queued and busy", (
            ("max by (host, pid) (session_monitor_pool_queue_depth)", "{{host}}:{{pid}} queued"),
            ("max by (host, pid) (session_monitor_pool_busy_threads)", "{{host}}:{{pid}} busy"),), width=24),
    )),
)  # fmt: skip
"""The dashboard, row by row."""


ALERTS: tuple[dict[str, Any], ...] = (
    {
        "alert": "SessionMonitorNoReaperLeader",
        # Over a window: with --workers, one scrape target is answered by any one of its processes.
        "expr": "(sum(max_over_time(session_monitor_reaper_leader[2m])) or vector(0)) < 1",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "No session-monitor process runs the reaper",
            "description": "For 2 minutes no scraped server reported session_monitor_reaper_leader=1: silent "
            "sessions are not expired and killed sessions are not ended.",
        },
    },
    {
        "alert": "SessionMonitorAgentsSilent",
        "expr": "max(session_monitor_sessions) > 0 and sum(rate(session_monitor_heartbeats_total[5m])) == 0",
        "for": "5m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "Live sessions, but no agent has synced for 5 minutes",
            "description": "The monitor lists live sessions but receives no heartbeats or agent syncs: the "
            "agents cannot reach the server (network, token, URL) or their Panel processes hang.",
        },
    },
    {
        "alert": "SessionMonitorStaleSessionsGrowing",
        "expr": 'max by (app) (session_monitor_sessions{state="stale"}) >= 5'
        ' and max by (app) (delta(session_monitor_sessions{state="stale"}[15m])) > 0',
        "for": "15m",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "Stale sessions of {{ $labels.app }} keep growing",
            "description": "{{ $value }} stale sessions of app {{ $labels.app }}, more than 15 minutes ago: an "
            "agent stopped reporting, or the reaper does not end them.",
        },
    },
    {
        "alert": "SessionMonitorHigh5xxRate",
        "expr": 'sum(rate(session_monitor_http_request_duration_seconds_count{status=~"5.."}[5m]))'
        " / sum(rate(session_monitor_http_request_duration_seconds_count[5m])) > 0.05",
        "for": "5m",
        "labels": {"severity": "critical"},
        "annotations": {
            "summary": "More than 5% of session-monitor requests fail with 5xx",
            "description": "{{ $value | humanizePercentage }} of requests answered 5xx over 5 minutes "
            "(database unavailable? see /healthz and the server log).",
        },
    },
    {
        "alert": "SessionMonitorLoopStalls",
        "expr": "sum by (host, pid) (increase(session_monitor_loop_stalls_total[10m])) >= 3",
        "labels": {"severity": "warning"},
        "annotations": {
            "summary": "The IOLoop of Panel process {{ $labels.host }}:{{ $labels.pid }} keeps stalling",
            "description": "{{ $value }} stalls in 10 minutes: one session's callback blocks every session of "
            "that process (GET /stalls or the dashboard's Stalls tab names the session and its stack).",
        },
    },
)
"""Alert rules."""


def target(expr: str, legend: str, ref_id: str) -> prom_b.Dataquery:
    return prom_b.Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).range().datasource(DATASOURCE)


def panel_builder(panel: Panel, panel_id: int) -> Any:
    builder: Any
    if panel.kind == "stat":
        reduce = common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False)
        builder = stat_b.Panel().height(6).reduce_options(reduce).graph_mode(common_m.BigValueGraphMode.AREA)
    else:
        builder = ts_b.Panel().height(8).fill_opacity(10).legend(
            common_b.VizLegendOptions().show_legend(True).display_mode(common_m.LegendDisplayMode.LIST)
            .placement(common_m.LegendPlacement.BOTTOM)
        )  # fmt: skip
        if panel.kind == "stacked":
            builder = builder.stacking(common_b.StackingConfig().mode(common_m.StackingMode.NORMAL))
    builder = builder.id(panel_id).title(panel.title).unit(panel.unit).span(panel.width).datasource(DATASOURCE)
    if panel.description:
        builder = builder.description(panel.description)
    for i, (expr, legend) in enumerate(panel.exprs):
        builder = builder.with_target(target(expr, legend, chr(ord("A") + i)))
    return builder


def dashboard() -> dict[str, Any]:
    builder = (
        dash_b.Dashboard("Panel session monitor")
        .uid("panel-session-monitor")
        .tags(["panel", "session-monitor"])
        .description("Live Panel sessions, kills, agents' sync, HTTP and the reaper, from session-monitor's /metrics.")
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(dash_b.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    panel_id = 0
    for title, panels in ROWS:
        panel_id += 1
        builder = builder.with_row(dash_b.Row(title).id(panel_id))
        for panel in panels:
            panel_id += 1
            builder = builder.with_panel(panel_builder(panel, panel_id))
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    return data


def rules() -> dict[str, Any]:
    return {"groups": [{"name": "session-monitor", "rules": list(ALERTS)}]}


def render() -> dict[Path, str]:
    header = "# Generated by deploy/generate.py: edit ALERTS there, then run it.\n"
    return {
        DASHBOARD_PATH: json.dumps(dashboard(), indent=2, sort_keys=True) + "\n",
        RULES_PATH: header + yaml.safe_dump(rules(), sort_keys=False, width=120, allow_unicode=True),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render().items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale.append(path)
            sys.stderr.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True), str(path)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        sys.stderr.write(f"out of date (run python deploy/generate.py): {', '.join(map(str, stale))}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
