"""The deployment files, read the way their tools read them, and the tools the checks run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CPU = ROOT / "docker-compose.cpu.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus.yml"
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy.cfg"
HAPROXY_IMAGE_CONFIG = "/usr/local/etc/haproxy/haproxy.cfg"  # where the haproxy image reads it
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "longenc.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "longenc.yml"
README = ROOT / "README.md"
SERVICE = "longenc"  # the compose service of the server, and the name Prometheus resolves


def require_tool(name: str) -> str:
    """Path of an executable; missing is a failure (`make test` installs it first)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found; `make system-deps` installs it (a Debian package)")
    return path


# --- Compose files: YAML with Compose's merge tags ---------------------------------------------


class ResetValue:
    """A value tagged `!reset` (remove the attribute) or `!override` (replace it) in an override."""

    def __init__(self, tag: str, value: Any) -> None:
        self.tag, self.value = tag, value


class ComposeLoader(yaml.SafeLoader):
    pass


def _construct_tagged(loader: ComposeLoader, node: yaml.Node) -> ResetValue:
    if isinstance(node, yaml.MappingNode):
        value: Any = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_scalar(node)
    return ResetValue(node.tag, value)


ComposeLoader.add_constructor("!reset", _construct_tagged)
ComposeLoader.add_constructor("!override", _construct_tagged)


def load_compose(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def plain(document: Any) -> Any:
    """The document as its tool sees it alone: tagged values replaced by their plain values."""
    if isinstance(document, ResetValue):
        return plain(document.value)
    if isinstance(document, dict):
        return {key: plain(value) for key, value in document.items()}
    if isinstance(document, list):
        return [plain(value) for value in document]
    return document


def _environment_dict(environment: list | dict) -> dict[str, str | None]:
    if isinstance(environment, dict):
        return dict(environment)
    pairs = (entry.split("=", 1) for entry in environment)
    return {pair[0]: (pair[1] if len(pair) == 2 else None) for pair in pairs}


def merge_compose(base: Any, override: Any, key: str = "") -> Any:
    """`docker compose -f base -f override`: mappings merge, `environment` merges by variable,
    other sequences and scalars are replaced, `!reset` removes, `!override` replaces."""
    if isinstance(override, ResetValue):
        return None if override.tag == "!reset" else plain(override.value)
    if key == "environment" and base is not None:
        merged = _environment_dict(base) | _environment_dict(override)
        return [name if value is None else f"{name}={value}" for name, value in merged.items()]
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for name, value in override.items():
            result = merge_compose(base.get(name), value, name)
            if result is None:
                merged.pop(name, None)
            else:
                merged[name] = result
        return merged
    return plain(override)


def environment_of(service: dict) -> dict[str, str | None]:
    return _environment_dict(service.get("environment", []))


# --- The Grafana dashboard and its PromQL -------------------------------------------------------


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels(dashboard: dict) -> list[dict]:
    """Every panel that draws something (rows and the panels folded inside them)."""
    found = []
    for panel in dashboard["panels"]:
        found.extend(panel.get("panels", []))
        if panel["type"] != "row":
            found.append(panel)
    return found


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query-type template variable."""
    queries = [
        (f"panel {panel['title']!r}", target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            queries.append((f"variable ${variable['name']}", inner.group(1) if inner else query))
    return queries


GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
}


def concrete_promql(expr: str) -> str:
    """The query Grafana sends: its interval variables filled in, `$name` variables as `.*`."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (functions, keywords and labels left out)."""
    expr = _STRING.sub('""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = _GROUPING.sub(" ", expr)
    return {name for name in _IDENTIFIER.findall(expr) if name.lower() not in _KEYWORDS}


# --- What the service exports --------------------------------------------------------------------

_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def exported_series_names() -> set[str]:
    """Every sample name the service's /metrics can carry, from its own metrics registry."""
    from app.metrics import Metrics

    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in _SAMPLE_SUFFIXES[family.type]
    }


# Series that Prometheus itself writes for every scrape target: a dashboard may use them too.
PROMETHEUS_TARGET_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
