"""The CPU image, end to end: built, run until its own health check passes, asked to encode in two
modes, scraped, and stopped with SIGTERM while a request is in flight.

The tests share one container and run in file order: the last one stops it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from sparse_core._native import library_name
from tests.image.podman import (
    free_port,
    inspect,
    log_lines,
    logs,
    metric_samples,
    podman,
    wait_healthy,
)

METRICS_PORT = 9000
HEALTHY_WITHIN_S = 300  # model load and warm-up of every mode, on two busy cores
# The C++ kernels' library, named by a digest of their sources (sparse_core/_native.py).
KERNEL = f"/opt/longenc/.torch_extensions/{library_name()}/{library_name()}.so"
DIMENSION = 384  # all-MiniLM-L6-v2


@dataclass
class Container:
    name: str
    url: str
    metrics_url: str


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[Container]:
    name = f"longenc-image-test-{free_port()}"
    port, metrics_port = free_port(), free_port()
    podman(
        "run", "--detach", "--name", name,
        "--publish", f"127.0.0.1:{port}:8000",
        "--publish", f"127.0.0.1:{metrics_port}:{METRICS_PORT}",
        "--env", f"LONGENC_METRICS_PORT={METRICS_PORT}",
        image,
        what=f"starting a container of {image}",
    )  # fmt: skip
    try:
        seconds = wait_healthy(name, HEALTHY_WITHIN_S)
        print(f"\n{name}: healthy after {seconds:.0f} s")
        yield Container(name, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}")
    finally:
        podman("rm", "--force", "--time", "0", name, what=f"removing {name}", check=False)


def test_torch_threads_follow_a_containers_cpu_limit(image: str) -> None:
    """`--cpus 1` on a host whose cores the container's affinity mask all holds: a CFS quota,
    which torch alone would not see."""
    script = (
        "import os; from app.cpus import cgroup_cpu_limit, set_torch_threads; "
        "print(len(os.sched_getaffinity(0)), cgroup_cpu_limit(), set_torch_threads(0))"
    )
    output = podman(
        "run", "--rm", "--cpus", "1", "--entrypoint", "python", image, "-c", script,
        what="running a CPU-limited container",
    )  # fmt: skip
    affinity, limit, threads = output.split()
    assert float(limit) == 1.0, output  # the quota was read, whatever the host's cores
    assert int(threads) == 1, output


def test_health_check_is_the_images_own(container: Container) -> None:
    check = inspect(container.name, "{{json .Config.Healthcheck.Test}}")
    assert "/health" in check, check
    assert inspect(container.name, "{{.State.Health.Status}}") == "healthy"
    assert httpx.get(f"{container.url}/health", timeout=10).status_code == 200


@pytest.mark.parametrize(
    "attention",
    [{"mode": "sliding_window", "window": 8}, {"mode": "topk", "top_k": 4}],
    ids=["sliding_window", "topk"],
)
def test_encodes_in_two_modes(container: Container, attention: dict) -> None:
    texts = ["a short text", "a second, longer text that runs past the window of eight tokens"]
    response = httpx.post(
        f"{container.url}/encode", json={"inputs": texts, "attention": attention}, timeout=120
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["attention"] == attention
    assert [len(vector) for vector in body["embeddings"]] == [DIMENSION, DIMENSION]
    for vector in body["embeddings"]:
        assert abs(sum(value * value for value in vector) - 1) < 1e-4  # normalized


def test_native_kernels_were_built_with_the_image_and_are_used(container: Container) -> None:
    # Built by the image's RUN step: older than the container, so not compiled at start-up.
    built = float(podman("exec", container.name, "stat", "-c", "%Y", KERNEL, what="stat kernel"))
    started = inspect(container.name, "{{.State.StartedAt.Unix}}")
    assert built < float(started), "the C++ kernels were compiled when the container started"
    # The server process (PID 1) has it loaded: top-k requests ran through it.
    maps = podman("exec", container.name, "cat", "/proc/1/maps", what="read the server's maps")
    assert KERNEL in maps, "the server never loaded the C++ kernels"
    assert not log_lines(container.name, r"C\+\+ kernels unavailable")


def test_metrics_are_served_on_their_own_port(container: Container) -> None:
    text = httpx.get(f"{container.metrics_url}/metrics", timeout=10).text
    requests = metric_samples(text, "longenc_requests_total")
    for mode in ("sliding_window", "topk"):
        assert requests[(("mode", mode), ("status", "200"))] >= 1, requests
    assert metric_samples(text, "longenc_queue_size")
    assert metric_samples(text, "process_resident_memory_bytes")
    # The same registry as /metrics on the main port (which the balancer hides: haproxy.cfg).
    main = httpx.get(f"{container.url}/metrics", timeout=10).text
    assert metric_samples(main, "longenc_requests_total") == requests


def test_sigterm_drains_then_exits_zero(container: Container) -> None:
    # A dense pass over ~6,000 tokens: seconds of work, in flight when the signal comes.
    document = "hello " * 6000
    outcome: dict = {}

    def send() -> None:
        response = httpx.post(
            f"{container.url}/encode",
            json={"inputs": [document], "attention": {"mode": "dense"}},
            timeout=300,
        )
        outcome["status"], outcome["body"] = response.status_code, response.text

    sender = threading.Thread(target=send)
    sender.start()
    wait_in_flight(container, at_least=1)
    podman("kill", "--signal", "TERM", container.name, what="SIGTERM")
    # Draining: still listening, but not ready.
    assert httpx.get(f"{container.url}/health", timeout=10).status_code == 503
    sender.join(timeout=300)
    assert outcome.get("status") == 200, outcome
    assert len(json.loads(outcome["body"])["embeddings"][0]) == DIMENSION
    exit_code = podman("wait", container.name, what="waiting for the container to exit", timeout=90)
    assert exit_code == "0", logs(container.name)
    assert log_lines(container.name, r"SIGTERM: draining 1 requests in flight")
    assert log_lines(container.name, r"drained; shutting down")


def wait_in_flight(container: Container, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{container.metrics_url}/metrics", timeout=10).text
        if metric_samples(text, "longenc_requests_in_flight").get((), 0) >= at_least:
            return
        time.sleep(0.05)
    pytest.fail(f"no request in flight after {timeout:.0f} s")
