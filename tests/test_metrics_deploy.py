"""The Prometheus and Grafana files under deploy/: valid for the real tools
(promtool), and naming only metrics the platform exposes, so renaming a metric
without updating its alerts and dashboard fails here. No server needed."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from tests.conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "v2g.json"

# SPEC §12, word for word.
SPEC_METRICS = {
    "dispatch_execution_latency_seconds",
    "vehicles_dispatched_total",
    "ack_rate",
    "mqtt_publish_success_total",
    "mqtt_publish_failure_total",
    "vehicle_injected_energy_kwh",
    "vehicle_co2_avoided_grams",
    "vehicle_energy_ratio",
    "telemetry_poll_timeout_total",
    "rte_generator_signals_total",
    "rte_generator_power_requested_kw_sum",
    "rte_generator_last_emit_timestamp_seconds",
    "rte_generator_emit_errors_total",
    "rte_generator_interval_seconds",
}
# The modules that declare the platform's metrics, and the scrape-time collectors.
METRIC_MODULES = ["dispatch.metrics", "telemetry.metrics", "v2g_project.bridge", "v2g_project.celery_metrics"]
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}  # written by Prometheus itself


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    return path


def families() -> dict[str, str]:
    """Every metric family /metrics can serve: name -> type."""
    from kpis.metrics import KpiCollector
    from v2g_project.celery_metrics import QueueDepthCollector

    found: dict[str, str] = {}
    for module in METRIC_MODULES:
        for value in vars(importlib.import_module(module)).values():
            if isinstance(value, MetricWrapperBase):
                found[value._name] = value._type
    for collector in (KpiCollector(), QueueDepthCollector()):
        found.update({family.name: family.type for family in collector.describe()})
    return found


def series_names() -> set[str]:
    """The sample names a query can use (counter _total, histogram _bucket/_sum/_count)."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return {name + suffix for name, kind in families().items() for suffix in suffixes.get(kind, [""])}


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "inf", "nan", "le",
}  # fmt: skip


def metric_names_in(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords,
    label matchers, grouping labels, durations and strings left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range and subquery durations
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)\b(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if not call and name not in PROMQL_WORDS:
            names.add(name)
    return names


def grafana_to_promql(expr: str) -> str:
    """A dashboard query as Prometheus receives it (Grafana's variables filled in)."""
    return (
        expr.replace("$__rate_interval", "5m")
        .replace("$__range", "6h")
        .replace("$__interval", "1m")
        .replace("$signal_type", ".*")
    )


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_spec_metrics_are_all_declared():
    assert SPEC_METRICS - series_names() - set(families()) == set()


def test_promql_name_extraction():
    assert metric_names_in(
        'histogram_quantile(0.99, sum by (le, signal_type) (rate(a_bucket{signal_type=~"x|y"}[5m]))) > 10'
    ) == {"a_bucket"}
    assert metric_names_in('b > 0 and on (task) c{x="y"} unless time() - d offset 5m') == {"b", "c", "d"}


def test_alert_rules_only_use_exposed_metrics():
    used = set().union(*(metric_names_in(expr) for expr in alert_exprs()))
    assert used - series_names() - PROMETHEUS_OWN == set()
    # The alerts the operators asked for are there.
    assert {
        "ack_rate",
        "dispatch_execution_latency_seconds_bucket",
        "mqtt_publish_failure_total",
        "telemetry_poll_timeout_total",
        "rte_generator_last_emit_timestamp_seconds",
        "celery_queue_depth",
        "celery_tasks_failed_total",
    } <= used


def test_dashboard_only_uses_exposed_metrics_and_shows_the_spec_ones():
    used = set().union(*(metric_names_in(grafana_to_promql(expr)) for expr in dashboard_exprs()))
    names = series_names()
    assert used - names == set()
    shown = used | {name.removesuffix("_bucket") for name in used}
    assert SPEC_METRICS - shown == set()
    assert {"celery_tasks_succeeded_total", "celery_tasks_failed_total", "celery_queue_depth"} <= used


def test_dashboard_queries_are_valid_promql(tmp_path):
    """Each dashboard query, as a recording rule, through promtool's PromQL parser."""
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"v2g:dashboard_query:{i}", "expr": grafana_to_promql(expr)}
                    for i, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_and_provisioning_files():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "v2g-overview"
    datasources = {
        target["datasource"]["uid"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    }
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert datasources == {ds["uid"] for ds in provisioned["datasources"]} == {"prometheus"}
    assert provisioned["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "v2g.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_promtool_check_config_and_rules():
    tool = promtool()
    config = subprocess.run(
        [tool, "check", "config", str(PROMETHEUS / "prometheus.yml")], capture_output=True, text=True
    )
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    assert {"targets": ["web:8000"], "labels": {"service": "web"}} in scrape[0]["static_configs"]
    assert scrape[0]["metrics_path"] == "/metrics"
    rules = subprocess.run(
        [tool, "check", "rules", str(PROMETHEUS / "alerts.yml")], capture_output=True, text=True
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_exprs())} rules found" in rules.stdout


def test_every_alert_fires_in_its_promtool_unit_test():
    """deploy/prometheus/alerts_test.yml feeds series to each alert rule and
    says when it must (and must not) fire; promtool evaluates them."""
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    firing = {
        check["alertname"] for case in tests for check in case["alert_rule_test"] if check["exp_alerts"]
    }
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    assert firing == {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    result = subprocess.run(
        [promtool(), "test", "rules", str(PROMETHEUS / "alerts_test.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
