"""docker-compose.yml and its CPU override: valid Compose, a GPU per replica, a scalable service.

Validated against the Compose Specification's JSON schema (vendored in compose_spec/, see its
README); the override is merged the way `docker compose -f docker-compose.yml -f
docker-compose.cpu.yml` merges it, and the result is validated too.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest

from tests.deploy.files import (
    COMPOSE,
    COMPOSE_CPU,
    DOCKERFILE,
    HAPROXY_CONFIG,
    HAPROXY_IMAGE_CONFIG,
    ROOT,
    SERVICE,
    environment_of,
    load_compose,
    merge_compose,
    plain,
    require_tool,
)

SCHEMA = json.loads((Path(__file__).with_name("compose_spec") / "compose-spec.json").read_text())
GPU_FILE = load_compose(COMPOSE)
CPU_FILE = load_compose(COMPOSE_CPU)
GPU_CONFIG = plain(GPU_FILE)
CPU_CONFIG = merge_compose(GPU_FILE, CPU_FILE)


def schema_errors(document: dict) -> list[str]:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<top>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_schema_rejects_what_compose_rejects() -> None:
    # The check itself can fail: a misspelt key and a bad type are caught.
    broken = {"services": {"longenc": {"image": "longenc", "deploy": {"replica": 2}}}}
    assert schema_errors(broken)
    assert schema_errors({"services": {"longenc": {"ports": "8000:8000"}}})


@pytest.mark.parametrize(
    "document",
    [GPU_CONFIG, plain(CPU_FILE), CPU_CONFIG],
    ids=["docker-compose.yml", "docker-compose.cpu.yml", "merged-cpu"],
)
def test_files_follow_the_compose_specification(document: dict) -> None:
    assert schema_errors(document) == []


def gpu_requests(config: dict) -> list[dict]:
    service = config["services"][SERVICE]
    reservations = service.get("deploy", {}).get("resources", {}).get("reservations", {})
    return reservations.get("devices", [])


def test_gpu_service_gets_the_gpus_and_claims_one_per_replica() -> None:
    requests = gpu_requests(GPU_CONFIG)
    assert requests, "the GPU service reserves no device"
    assert all(r["driver"] == "nvidia" and "gpu" in r["capabilities"] for r in requests)
    service = GPU_CONFIG["services"][SERVICE]
    # Docker maps `count: N` to GPUs 0..N-1 in every replica: replicas must claim one themselves.
    assert service["entrypoint"][:2] == ["python", "deploy/gpu_claim.py"]
    assert service["entrypoint"][-3:] == ["python", "-m", "app"]
    claims_volume = next(
        v for v in service["volumes"] if v.endswith(":/var/lib/longenc/gpu-claims")
    )
    assert claims_volume.split(":")[0] in GPU_CONFIG["volumes"], "claims must be a shared volume"
    assert environment_of(service)["LONGENC_DEVICE"] == "cuda"


def test_cpu_override_needs_no_gpu() -> None:
    assert gpu_requests(CPU_CONFIG) == []
    service = CPU_CONFIG["services"][SERVICE]
    assert service["build"]["args"]["HAS_NVIDIA"] == "no"
    assert not service["build"]["args"]["BASE_IMAGE"].startswith("nvidia/")
    assert service["entrypoint"] == ["python", "-m", "app"]
    assert environment_of(service)["LONGENC_DEVICE"] == "cpu"
    assert service["image"] != GPU_CONFIG["services"][SERVICE]["image"]


@pytest.mark.parametrize("config", [GPU_CONFIG, CPU_CONFIG], ids=["gpu", "cpu"])
def test_service_can_be_scaled(config: dict) -> None:
    service = config["services"][SERVICE]
    # A fixed name or a published host port would make the second replica fail to start.
    assert "container_name" not in service
    assert "ports" not in service
    assert set(service["build"]["args"]) <= set(dockerfile_args())


def dockerfile_args() -> list[str]:
    return re.findall(r"^ARG (\w+)", DOCKERFILE.read_text(), re.MULTILINE)


def test_every_setting_can_be_passed_and_none_is_misspelt() -> None:
    from app.settings import Settings

    settings = {f"LONGENC_{name.upper()}" for name in Settings.model_fields}
    fixed_by_image = {
        "LONGENC_HOST",
        "LONGENC_PORT",
    }  # the Dockerfile's ENV; the balancer needs them
    passed = set(environment_of(GPU_CONFIG["services"][SERVICE]))
    assert passed - settings == set(), "variables the service does not read"
    assert settings - fixed_by_image - passed == set(), "settings docker-compose.yml cannot pass"


def test_balancer_sends_to_every_replica_of_the_service() -> None:
    port = image_port()
    assert str(port) in [str(p) for p in GPU_CONFIG["services"][SERVICE]["expose"]]
    config = haproxy_sections()
    (frontend,) = [lines for (kind, _), lines in config.items() if kind == "frontend"]
    backend = config[("backend", directive(frontend, "default_backend")[0])]
    # One slot per possible replica, filled from the engine's DNS (Docker: 127.0.0.11, podman:
    # aardvark-dns; both in the container's resolv.conf), so that replicas added by --scale join.
    slots, address = directive(backend, "server-template")[1:3]
    assert address == f"{SERVICE}:{port}"
    assert int(slots.split("-")[1]) >= 8
    defaults = directive(backend, "default-server")
    resolvers = defaults[defaults.index("resolvers") + 1]
    assert directive(config[("resolvers", resolvers)], "parse-resolv-conf") == []
    assert "check" in defaults and "init-addr" in defaults
    balancer = GPU_CONFIG["services"]["balancer"]
    assert f"./{HAPROXY_CONFIG.relative_to(ROOT)}:{HAPROXY_IMAGE_CONFIG}:ro" in balancer["volumes"]
    assert balancer["depends_on"][SERVICE]["condition"] == "service_healthy"


def test_balancer_configuration_is_valid_for_haproxy(tmp_path: Path) -> None:
    haproxy = require_tool("haproxy")
    checked = subprocess.run([haproxy, "-c", "-f", str(HAPROXY_CONFIG)], capture_output=True)
    assert checked.returncode == 0, checked.stderr.decode()
    # The check can fail: a misspelt keyword is refused.
    broken = tmp_path / "haproxy.cfg"
    broken.write_text(HAPROXY_CONFIG.read_text().replace("balance leastconn", "balance leastcon"))
    assert subprocess.run([haproxy, "-c", "-f", str(broken)], capture_output=True).returncode != 0


def test_balancer_is_local_unless_asked_and_hides_metrics() -> None:
    (published,) = GPU_CONFIG["services"]["balancer"]["ports"]
    address, _, _ = published.rpartition(":")
    # ${LONGENC_PUBLISH_ADDRESS:-127.0.0.1}:${LONGENC_PUBLISH_PORT:-8000}
    assert re.fullmatch(r"\$\{LONGENC_PUBLISH_ADDRESS:-127\.0\.0\.1\}:\$\{\w+:-\d+\}", address)
    for name in ("prometheus", "grafana"):
        for mapping in GPU_CONFIG["services"][name]["ports"]:
            assert mapping.startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond the host"
    (frontend,) = [lines for (kind, _), lines in haproxy_sections().items() if kind == "frontend"]
    rules = [line for line in frontend if line.startswith("http-request return status 404")]
    assert rules and "{ path /metrics }" in rules[0]


def test_balancer_takes_a_draining_replica_out_and_moves_its_requests_on() -> None:
    config = haproxy_sections()
    backend = config[("backend", SERVICE)]
    # /health answers 503 from the moment a replica starts draining.
    assert directive(backend, "option") == ["httpchk", "GET", "/health"]
    assert directive(backend, "http-check") == ["expect", "status", "200"]
    defaults = directive(backend, "default-server")
    interval = defaults[defaults.index("inter") + 1]
    assert interval.endswith("s") and int(interval[:-1]) <= 2
    assert int(defaults[defaults.index("fall") + 1]) <= 3
    # ... and at its first 5xx answer: with leastconn a replica that refuses fast holds the
    # fewest connections, so retries would go back to it until the checks caught up.
    assert defaults[defaults.index("observe") + 1] == "layer7"
    assert defaults[defaults.index("error-limit") + 1] == "1"
    assert defaults[defaults.index("on-error") + 1] == "mark-down"
    # A request that finds a replica gone or draining goes to another one, quickly.
    common = config[("defaults", "")]
    assert {"conn-failure", "empty-response", "503"} <= set(directive(common, "retry-on"))
    assert directive(common, "option", "redispatch")
    # Replayable only when held whole: HAProxy waits for the body before choosing a replica.
    assert directive(common, "option", "http-buffer-request") == []
    connect = directive(common, "timeout", "connect")[0]
    assert connect.endswith("s") and int(connect[:-1]) <= 5


def haproxy_sections() -> dict[tuple[str, str], list[str]]:
    """deploy/haproxy.cfg as {(section keyword, name): its lines}, comments left out."""
    sections: dict[tuple[str, str], list[str]] = {}
    lines: list[str] = []
    for raw in HAPROXY_CONFIG.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not raw[0].isspace():
            keyword, _, name = line.partition(" ")
            lines = sections.setdefault((keyword, name.strip()), [])
        else:
            lines.append(line)
    return sections


def directive(lines: list[str], *keywords: str) -> list[str]:
    """The arguments of the one line that starts with `keywords` (a failure if there is none)."""
    found = [
        line.split()[len(keywords) :]
        for line in lines
        if line.split()[: len(keywords)] == list(keywords)
    ]
    assert len(found) == 1, f"{' '.join(keywords)}: {len(found)} lines"
    return found[0]


def image_port() -> int:
    return int(re.search(r"LONGENC_PORT=(\d+)", DOCKERFILE.read_text()).group(1))


def test_mounted_files_exist() -> None:
    for name, service in GPU_CONFIG["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_monitoring_services_read_the_deploy_folder() -> None:
    prometheus = GPU_CONFIG["services"]["prometheus"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    grafana = GPU_CONFIG["services"]["grafana"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    home = environment_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy/grafana/dashboards" / Path(home).name).is_file()
