"""docker-compose.yml and its CPU override: valid Compose, a GPU per replica, a scalable service.

Validated against the Compose Specification's JSON schema (vendored in compose_spec/, see its
README); the override is merged the way `docker compose -f docker-compose.yml -f
docker-compose.cpu.yml` merges it, and the result is validated too.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest

from tests.deploy.files import (
    COMPOSE,
    COMPOSE_CPU,
    DOCKERFILE,
    NGINX_RESOLVER_SCRIPT,
    NGINX_TEMPLATE,
    ROOT,
    SERVICE,
    environment_of,
    load_compose,
    merge_compose,
    plain,
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
    nginx = NGINX_TEMPLATE.read_text()
    upstream = re.search(r"upstream\s+(\w+)\s*\{([^}]*)\}", nginx)
    assert upstream, "nginx.conf.template defines no upstream"
    assert re.search(rf"proxy_pass\s+http://{upstream.group(1)};", nginx)
    servers = re.findall(r"^\s*server\s+(\S+)\s*([^;]*);", upstream.group(2), re.MULTILINE)
    assert [address for address, _ in servers] == [f"{SERVICE}:{port}"]
    # Re-resolved through the engine's DNS, so that replicas added by --scale join the pool. Its
    # address differs by engine (Docker: 127.0.0.11, podman: the network's gateway): a script
    # that the nginx image's entry point sources finds it in /etc/resolv.conf.
    assert "resolve" in servers[0][1].split()
    assert re.search(r"^\s*resolver\s+\$\{NGINX_RESOLVER\}\s", nginx, re.MULTILINE)
    balancer = GPU_CONFIG["services"]["balancer"]
    output = environment_of(balancer)["NGINX_ENVSUBST_OUTPUT_DIR"]
    assert f"{output}/nginx.conf" == "/etc/nginx/nginx.conf"
    template = f"./{NGINX_TEMPLATE.relative_to(ROOT)}:/etc/nginx/templates/nginx.conf.template:ro"
    assert template in balancer["volumes"]
    source = f"./{NGINX_RESOLVER_SCRIPT.relative_to(ROOT)}:"
    (script,) = [volume for volume in balancer["volumes"] if volume.startswith(source)]
    assert re.fullmatch(r".*:/docker-entrypoint\.d/[^/]+\.envsh:ro", script)
    assert os.access(NGINX_RESOLVER_SCRIPT, os.X_OK), "the entry point sources executable ones only"
    assert balancer["depends_on"][SERVICE]["condition"] == "service_healthy"


def test_template_leaves_nginx_variables_alone() -> None:
    # The entry point substitutes only variables its environment defines: nginx's own ($host,
    # $proxy_add_x_forwarded_for) must not be among the balancer's environment variables.
    nginx_variables = set(re.findall(r"\$(\w+)", NGINX_TEMPLATE.read_text())) - {"NGINX_RESOLVER"}
    assert nginx_variables
    defined = set(environment_of(GPU_CONFIG["services"]["balancer"]))
    assert not nginx_variables & defined


def test_balancer_is_local_unless_asked_and_hides_metrics() -> None:
    (published,) = GPU_CONFIG["services"]["balancer"]["ports"]
    address, _, _ = published.rpartition(":")
    # ${LONGENC_PUBLISH_ADDRESS:-127.0.0.1}:${LONGENC_PUBLISH_PORT:-8000}
    assert re.fullmatch(r"\$\{LONGENC_PUBLISH_ADDRESS:-127\.0\.0\.1\}:\$\{\w+:-\d+\}", address)
    for name in ("prometheus", "grafana"):
        for mapping in GPU_CONFIG["services"][name]["ports"]:
            assert mapping.startswith("127.0.0.1:"), f"{name} publishes {mapping} beyond the host"
    assert re.search(r"location\s*=\s*/metrics\s*\{\s*return\s+404;", NGINX_TEMPLATE.read_text())


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


def test_resolver_script_picks_the_engines_dns_only(tmp_path: Path) -> None:
    # podman's resolv.conf: aardvark-dns first, then the host's resolvers, which know no service.
    resolv = tmp_path / "resolv.conf"
    script = NGINX_RESOLVER_SCRIPT.read_text().replace("/etc/resolv.conf", str(resolv))
    for content, expected in [
        ("search dns.podman\nnameserver 10.89.0.1\nnameserver 192.0.2.53\n", "10.89.0.1"),
        ("nameserver 127.0.0.11\noptions ndots:0\n", "127.0.0.11"),
        ("nameserver fd00::1\n", "[fd00::1]"),
    ]:
        resolv.write_text(content)
        result = subprocess.run(
            ["sh", "-c", script + '\necho "$NGINX_RESOLVER"'], capture_output=True, text=True
        )
        assert result.stdout.strip() == expected, result.stderr


def test_balancer_moves_on_from_a_replica_that_is_gone() -> None:
    # A stopped replica's address stops answering at all: connections to it must time out fast,
    # and the request go to the next replica instead of failing with 504.
    nginx = NGINX_TEMPLATE.read_text()
    connect = re.search(r"proxy_connect_timeout\s+(\d+)s;", nginx)
    assert connect and int(connect.group(1)) <= 5
    retried = re.search(r"^\s*proxy_next_upstream\s+([^;]*);", nginx, re.MULTILINE).group(1)
    assert {"error", "timeout", "http_503", "http_429", "non_idempotent"} <= set(retried.split())
