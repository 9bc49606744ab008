"""deploy/prometheus.yml: valid for promtool, and scraping every replica's metrics port, not the
balancer."""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy.files import (
    COMPOSE,
    PROMETHEUS_CONFIG,
    SERVICE,
    environment_of,
    load_compose,
    plain,
    require_tool,
)

CONFIG = yaml.safe_load(PROMETHEUS_CONFIG.read_text())


def test_promtool_accepts_the_config() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def longenc_job() -> dict:
    jobs = [job for job in CONFIG["scrape_configs"] if job["job_name"] == SERVICE]
    assert len(jobs) == 1, "one scrape job named after the service"
    return jobs[0]


def test_every_replica_is_found_through_dns() -> None:
    job = longenc_job()
    assert job.get("metrics_path", "/metrics") == "/metrics"
    # The compose service name resolves to one A record per replica; the balancer's would not.
    assert "static_configs" not in job
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == [SERVICE]
    assert discovery.get("type", "SRV") == "A"
    # The replicas' metrics port, which the compose network reaches and the host does not.
    service = plain(load_compose(COMPOSE))["services"][SERVICE]
    metrics_port = environment_of(service)["LONGENC_METRICS_PORT"]
    assert discovery["port"] == int(metrics_port)
    assert metrics_port in [str(port) for port in service["expose"]]
    assert "ports" not in service
