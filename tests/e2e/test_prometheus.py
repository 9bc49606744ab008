"""The metrics path end to end: the service, scraped by a real Prometheus, queried over its API.

Prometheus runs on loopback with a config derived from deploy/prometheus.yml: the same job and
metrics path, its DNS discovery of the compose service replaced by the local server's address, a
1 s scrape interval and a temporary storage folder. Traffic goes out in two rounds (each waited
for in Prometheus) in two attention modes, plus one rejected request per round; then the series
are read back through /api/v1/query, and so is every query of the Grafana dashboard.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.deploy.files import (
    PROMETHEUS_CONFIG,
    SERVICE,
    concrete_promql,
    dashboard_queries,
    load_dashboard,
    require_tool,
)
from tests.e2e.server import Server, free_port

pytestmark = pytest.mark.e2e

READY_TIMEOUT_S = 30
MODES = {
    "block": {"mode": "block", "block_size": 16},
    "sliding_window": {"mode": "sliding_window", "window": 8},
}
REQUESTS_PER_ROUND = 3  # per mode
TEXTS = ["Prometheus scrapes every replica.", "A second input, a little longer than the first."]


def derive_config(deploy_config: dict, target: str) -> dict:
    """deploy/prometheus.yml's longenc job, pointed at `target`, scraping every second."""
    (job,) = [job for job in deploy_config["scrape_configs"] if job["job_name"] == SERVICE]
    assert [d["names"] for d in job["dns_sd_configs"]] == [[SERVICE]], "unexpected discovery"
    local_job = {key: value for key, value in job.items() if not key.endswith("_sd_configs")}
    local_job["static_configs"] = [{"targets": [target]}]
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [local_job],
    }


class Prometheus:
    def __init__(self, config: dict, folder: Path) -> None:
        binary = require_tool("prometheus")
        self.url = f"http://127.0.0.1:{free_port()}"
        config_file = folder / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config))
        self.log_path = folder / "prometheus.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready: {self.log_path.read_text()}")

    def query(self, promql: str) -> list[dict]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, promql: str) -> float | None:
        """The value of a query that selects one series, None while it selects none."""
        result = self.query(promql)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float) -> None:
        """Wait until a scrape has brought the series to `expected`."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.value(promql) != expected:
            if time.monotonic() > deadline:
                pytest.fail(f"{promql} is {self.value(promql)}, never {expected}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    return require_tool("prometheus")


@pytest.fixture(scope="module")
def longenc(prometheus_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # No warm-up: it records no metrics, and the test needs no first-request latency.
    server = Server({"LONGENC_WARMUP": "false"}, tmp_path_factory.mktemp("longenc") / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def prometheus(longenc: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    config = derive_config(
        yaml.safe_load(PROMETHEUS_CONFIG.read_text()), f"127.0.0.1:{longenc.port}"
    )
    instance = Prometheus(config, tmp_path_factory.mktemp("prometheus"))
    try:
        instance.wait_ready()
        instance.wait_for(f'up{{job="{SERVICE}"}}', 1)
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def traffic(longenc: Server, prometheus: Prometheus) -> dict[str, int]:
    """Requests answered 200 per mode, each round seen by Prometheus before the next."""
    sent = dict.fromkeys(MODES, 0)
    with httpx.Client(base_url=longenc.url, timeout=60) as client:
        for round_number in (1, 2):
            for mode, attention in MODES.items():
                for _ in range(REQUESTS_PER_ROUND):
                    response = client.post(
                        "/encode", json={"inputs": TEXTS, "attention": attention}
                    )
                    assert response.status_code == 200, response.text
                    sent[mode] += 1
            rejected = client.post("/encode", json={"inputs": TEXTS, "attention": {"mode": "no"}})
            assert rejected.status_code == 422, rejected.text
            for mode, count in sent.items():
                prometheus.wait_for(requests_total(mode, "200"), count)
            prometheus.wait_for(requests_total("none", "422"), round_number)
    return sent


def requests_total(mode: str, status: str) -> str:
    return f'longenc_requests_total{{job="{SERVICE}", mode="{mode}", status="{status}"}}'


def test_request_counter_arrives_per_mode_and_status(
    prometheus: Prometheus, traffic: dict[str, int]
) -> None:
    series = prometheus.query(f'longenc_requests_total{{job="{SERVICE}"}}')
    counts = {(s["metric"]["mode"], s["metric"]["status"]): float(s["value"][1]) for s in series}
    expected = {(mode, "200"): float(count) for mode, count in traffic.items()}
    assert counts == expected | {("none", "422"): 2.0}  # one unknown mode per round


def test_latency_buckets_arrive_per_mode(prometheus: Prometheus, traffic: dict[str, int]) -> None:
    buckets = prometheus.query(f'longenc_request_duration_seconds_bucket{{job="{SERVICE}"}}')
    by_mode: dict[str, dict[str, float]] = {}
    for bucket in buckets:
        labels = bucket["metric"]
        by_mode.setdefault(labels["mode"], {})[labels["le"]] = float(bucket["value"][1])
    assert set(traffic) <= set(by_mode)
    for mode, count in traffic.items():
        assert by_mode[mode]["+Inf"] == count  # every request observed once
        assert len(by_mode[mode]) > 1, "a histogram has finite buckets too"
        finite = sorted((float(le), n) for le, n in by_mode[mode].items() if le != "+Inf")
        assert [n for _, n in finite] == sorted(n for _, n in finite), "buckets are cumulative"


def test_memory_gauges_arrive(prometheus: Prometheus, traffic: dict[str, int]) -> None:
    for name in ("longenc_gpu_memory_allocated_bytes", "longenc_gpu_memory_reserved_bytes"):
        value = prometheus.value(f'{name}{{job="{SERVICE}"}}')
        assert value is not None and value >= 0, name
    peaks = prometheus.query(f'longenc_gpu_memory_peak_bytes{{job="{SERVICE}"}}')
    assert {peak["metric"]["mode"] for peak in peaks} == set(traffic)
    resident = prometheus.value(f'process_resident_memory_bytes{{job="{SERVICE}"}}')
    assert resident is not None and resident > 0


def test_every_dashboard_query_returns_data(
    prometheus: Prometheus, traffic: dict[str, int]
) -> None:
    empty = [
        where
        for where, expr in dashboard_queries(load_dashboard())
        if not prometheus.query(concrete_promql(expr))
    ]
    assert empty == [], "dashboard queries without data after traffic in every panel's series"


def test_latency_quantiles_are_numbers(prometheus: Prometheus, traffic: dict[str, int]) -> None:
    p99 = prometheus.query(
        "histogram_quantile(0.99, sum by (le, mode) "
        f'(rate(longenc_request_duration_seconds_bucket{{job="{SERVICE}"}}[1m])))'
    )
    quantiles = {series["metric"]["mode"]: float(series["value"][1]) for series in p99}
    assert set(traffic) <= set(quantiles)
    assert all(math.isfinite(quantiles[mode]) and quantiles[mode] > 0 for mode in traffic)
