"""The alert rules and the Grafana dashboard in deploy/monitoring, checked offline: every PromQL expression parses
(promql-parser, a PromQL parser in Rust: no promtool release is served here) and names only metrics the worker
exports, or kube-state-metrics' for the exit code."""
from __future__ import annotations

import json

import promql_parser
import pytest
import yaml

from streams import metrics
from tests.conftest import REPO

MONITORING = REPO / "deploy" / "monitoring"
EXTERNAL = {"kube_pod_container_status_last_terminated_exitcode"}  # kube-state-metrics


def exported() -> set[str]:
    """Every sample name the worker's /metrics can show."""
    names = {metrics.LAG_METRIC}
    for family in metrics.REGISTRY.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


def selected(expr: str) -> list[str]:
    names: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.append(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def rules() -> list[dict]:
    doc = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def panel_exprs() -> list[str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_every_alert_parses_names_exported_metrics_and_says_what_is_wrong() -> None:
    known = exported() | EXTERNAL
    assert {"clickstream_commit_waiting_seconds", "clickstream_dead_letters_total", "process_start_time_seconds",
            "clickstream_click_to_prediction_seconds_bucket"} <= known
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)) >= 6
    for rule in rules():
        assert set(selected(rule["expr"])) <= known, rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        if "for" in rule:
            promql_parser.parse_duration(rule["for"])


def test_every_dashboard_panel_parses_and_names_exported_metrics() -> None:
    exprs = panel_exprs()
    assert len(exprs) >= 8
    for expr in exprs:
        assert set(selected(expr)) <= exported(), expr


def test_the_check_catches_a_broken_expression() -> None:
    with pytest.raises(ValueError):
        selected("sum by (topic (rate(clickstream_clicks_total[5m]))")
