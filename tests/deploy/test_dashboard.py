"""The Grafana dashboard: it asks only for series the service exports, in valid PromQL, and it
shows what an operator needs: traffic, latency split, batching and memory, per mode."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.files import (
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    PROMETHEUS_TARGET_SERIES,
    concrete_promql,
    dashboard_panels,
    dashboard_queries,
    exported_series_names,
    load_dashboard,
    metric_names,
    require_tool,
)

DASHBOARD = load_dashboard()
QUERIES = dashboard_queries(DASHBOARD)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le, mode) (rate(a_bucket{mode=~"$mode"}[$__rate_interval]))', {"a_bucket"}),
        (
            "rate(a_sum[5m]) / on (instance) group_left (job) b_count offset 1m",
            {"a_sum", "b_count"},
        ),
        ('count(up{job="x"} == 1) and absent(c{l="y(z)"})', {"up", "c"}),
        ("histogram_quantile(0.95, sum(rate(d[1m])) by (le)) * 1e3", {"d"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_queries_use_only_exported_series() -> None:
    exported = exported_series_names() | PROMETHEUS_TARGET_SERIES
    unknown = {(where, name) for where, expr in QUERIES for name in metric_names(expr) - exported}
    assert unknown == set(), "the service exports no such series"


def test_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": concrete_promql(expr)}
                    for index, (_, expr) in enumerate(QUERIES)
                ],
            }
        ]
    }
    rules_file = tmp_path / "dashboard_rules.yml"
    rules_file.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [promtool, "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def panel_queries(title_words: str) -> str:
    """All PromQL of the panels whose title holds every given word (case-insensitive)."""
    words = title_words.lower().split()
    found = [
        target["expr"]
        for panel in dashboard_panels(DASHBOARD)
        if all(word in panel["title"].lower() for word in words)
        for target in panel.get("targets", [])
    ]
    assert found, f"no panel titled with {title_words!r}"
    return "\n".join(found)


def test_request_rate_and_errors() -> None:
    assert "sum by (mode) (rate(longenc_requests_total" in panel_queries("request rate")
    errors = panel_queries("error rate")
    assert "sum by (status)" in errors and 'status!~"2.."' in errors


def test_latency_quantiles_per_mode() -> None:
    latency = panel_queries("request latency")
    for quantile in ("0.5", "0.95", "0.99"):
        assert (
            f"histogram_quantile({quantile}, sum by (le, mode) "
            "(rate(longenc_request_duration_seconds_bucket"
        ) in latency


def test_queue_time_beside_inference_time() -> None:
    split = panel_queries("queue time vs inference time")
    assert "longenc_queue_duration_seconds" in split
    assert "longenc_inference_duration_seconds" in split


@pytest.mark.parametrize(
    ("title", "series"),
    [
        ("queue size", ["longenc_queue_size"]),
        ("batch size", ["longenc_batch_size_bucket", "longenc_batch_size_sum"]),
        ("batch tokens", ["longenc_batch_tokens_bucket", "longenc_batch_tokens_sum"]),
        ("input tokens", ["longenc_input_tokens_bucket"]),
        (
            "gpu memory allocated reserved",
            ["longenc_gpu_memory_allocated_bytes", "longenc_gpu_memory_reserved_bytes"],
        ),
        ("gpu peak memory", ["max by (mode) (longenc_gpu_memory_peak_bytes"]),
        ("resident memory", ["process_resident_memory_bytes"]),
    ],
)
def test_batching_and_memory_panels(title: str, series: list[str]) -> None:
    queries = panel_queries(title)
    for name in series:
        assert name in queries


def test_panels_use_the_provisioned_datasource() -> None:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"  # the compose service
    for panel in dashboard_panels(DASHBOARD):
        for item in [panel, *panel.get("targets", [])]:
            assert item["datasource"]["uid"] == datasource["uid"], panel["title"]


def test_layout_fits_the_grid() -> None:
    panels = dashboard_panels(DASHBOARD) + [p for p in DASHBOARD["panels"] if p["type"] == "row"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        position = panel["gridPos"]
        assert position["x"] >= 0 and position["x"] + position["w"] <= 24, panel["title"]


def test_provider_loads_the_dashboard_folder() -> None:
    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert DASHBOARD["uid"] and DASHBOARD["title"]
