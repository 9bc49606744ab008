"""docker-compose.yml with its CPU override, brought up for real with podman-compose.

Two replicas of the CPU image behind the balancer, with Prometheus. The HAProxy and Prometheus
images cannot be pulled here: stand-ins built from Debian's packages carry their names
(deploy/image/standins). Grafana has no such package and is not started; its provisioning and
dashboard are checked statically (tests/deploy/test_dashboard.py). podman 4.3 cannot wait for
`service_healthy`, so podman-compose starts the balancer at once (it finds the replicas through DNS
and lets them in when their /health passes), and without systemd the image's health check is run by
the test itself.

The tests share one stack and run in file order: the last one stops a replica.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.image.podman import (
    build,
    container_url,
    free_port,
    inspect,
    log_lines,
    logs,
    metric_samples,
    podman,
    run,
    wait_healthy,
)

PROJECT = "longenc-compose-test"
FILES = ["-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml"]
STARTED = ["longenc", "balancer", "prometheus"]  # not grafana: no image and no Debian package
REPLICAS = 2
METRICS_PORT = 9000
HEALTHY_WITHIN_S = 400  # two replicas loading the model at once on two busy cores
PODMAN_COMPOSE = Path(sys.executable).with_name("podman-compose")


@dataclass
class Stack:
    replicas: list[str]
    url: str
    prometheus_url: str
    variables: dict[str, str] = field(default_factory=dict)  # what compose was given


def compose(
    *args: str, variables: dict[str, str], what: str, timeout: float = 300, check: bool = True
):
    """podman-compose on the project's two files, with `variables` in its environment."""
    argv = [str(PODMAN_COMPOSE), "--project-name", PROJECT, *FILES, *args]
    return run(argv, what=what, timeout=timeout, check=check, env=variables)


def service_containers(service: str) -> list[str]:
    names = podman(
        "ps", "--all", "--format", "{{.Names}}",
        "--filter", f"label=com.docker.compose.project={PROJECT}",
        "--filter", f"label=com.docker.compose.service={service}",
        what=f"listing the {service} containers",
    )  # fmt: skip
    return sorted(names.split())


@pytest.fixture(scope="module")
def stack(image: str) -> Iterator[Stack]:
    assert PODMAN_COMPOSE.exists(), "podman-compose comes with the test extra"
    seconds = build("deploy/image/standins/build.sh", what="building stand-ins", timeout=900)
    print(f"\nstand-ins for nginx and Prometheus: {seconds:.0f} s")
    variables = {
        # No warm-up pass per mode: two replicas warming up fourteen modes at once take minutes on
        # two cores; test_image.py covers the warm-up and the health check that waits for it.
        "LONGENC_WARMUP": "false",
        "LONGENC_PUBLISH_PORT": str(free_port()),
        "PROMETHEUS_PUBLISH_PORT": str(free_port()),
        "GRAFANA_PUBLISH_PORT": str(free_port()),
    }
    remove_stack(variables)  # what an interrupted run may have left
    up = ["up", "--detach", "--scale", f"longenc={REPLICAS}", *STARTED]
    compose(*up, variables=variables, what="podman-compose up")
    try:
        replicas = service_containers("longenc")
        assert len(replicas) == REPLICAS, replicas
        for replica in replicas:
            print(f"{replica}: healthy after {wait_healthy(replica, HEALTHY_WITHIN_S):.0f} s")
        stack = Stack(
            replicas,
            f"http://127.0.0.1:{variables['LONGENC_PUBLISH_PORT']}",
            f"http://127.0.0.1:{variables['PROMETHEUS_PUBLISH_PORT']}",
            variables,
        )
        wait_until(lambda: get(f"{stack.url}/health").status_code == 200, 60, "balancer ready")
        yield stack
    finally:
        remove_stack(variables)


def remove_stack(variables: dict[str, str]) -> None:
    # podman-compose's `down` removes only the replicas of the scale it is given (one): remove
    # every container of the project first, one at a time, then the network and the volumes.
    for name in service_containers("balancer") + service_containers("longenc"):
        print(f"--- {name}\n{logs(name)[-2000:]}")
    for _ in range(3):
        names = project_containers()
        for name in names:
            podman("rm", "--force", "--time", "10", name, what=f"removing {name}", check=False)
        if not names:
            break
    left = project_containers()
    compose("down", "--volumes", variables=variables, what="podman-compose down", check=False)
    assert not left, f"containers of {PROJECT} that podman could not remove: {left}"


def project_containers() -> list[str]:
    return podman(
        "ps", "--all", "--format", "{{.Names}}",
        "--filter", f"label=com.docker.compose.project={PROJECT}",
        what="listing the stack's containers",
    ).split()  # fmt: skip


def get(url: str) -> httpx.Response:
    try:
        return httpx.get(url, timeout=10)
    except httpx.TransportError as error:
        return httpx.Response(599, text=repr(error))


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    pytest.fail(f"{what}: not within {timeout:.0f} s")


def answered(replica: str) -> float:
    """Requests a replica has answered with 200, from its own metrics port."""
    text = container_url(replica, f"http://127.0.0.1:{METRICS_PORT}/metrics")
    samples = metric_samples(text, "longenc_requests_total")
    return sum(value for labels, value in samples.items() if ("status", "200") in labels)


def encode(url: str, text: str, mode: str = "sliding_window") -> int:
    body = {"inputs": [text], "attention": {"mode": mode, "window": 64}}
    if mode == "dense":
        body["attention"] = {"mode": "dense"}
    return httpx.post(f"{url}/encode", json=body, timeout=300).status_code


def test_requests_spread_over_both_replicas(stack: Stack) -> None:
    before = {replica: answered(replica) for replica in stack.replicas}
    statuses: list[int] = []

    def client(index: int) -> None:
        for number in range(6):
            statuses.append(encode(stack.url, f"request {index}.{number}: " + "text " * 50))

    clients = [threading.Thread(target=client, args=(index,)) for index in range(6)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    assert statuses == [200] * 36
    served = {replica: answered(replica) - before[replica] for replica in stack.replicas}
    assert sum(served.values()) == 36, served  # each request answered once
    assert all(count >= 6 for count in served.values()), served


def test_balancer_is_local_and_hides_metrics(stack: Stack) -> None:
    (balancer,) = service_containers("balancer")
    published = podman("port", balancer, what="the balancer's published port")
    assert published == f"8000/tcp -> 127.0.0.1:{stack.variables['LONGENC_PUBLISH_PORT']}"
    assert get(f"{stack.url}/metrics").status_code == 404


def test_prometheus_discovers_and_scrapes_both_replicas(stack: Stack) -> None:
    addresses = {
        inspect(replica, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
        for replica in stack.replicas
    }
    expected = {f"{address}:{METRICS_PORT}" for address in addresses}

    def scraped() -> set[str]:
        response = get(f"{stack.prometheus_url}/api/v1/targets")
        if response.status_code != 200:
            return set()
        targets = response.json()["data"]["activeTargets"]
        return {
            target["labels"]["instance"]
            for target in targets
            if target["labels"]["job"] == "longenc" and target["health"] == "up"
        }

    wait_until(lambda: scraped() == expected, 120, f"Prometheus scraping {sorted(expected)}")
    query = httpx.get(
        f"{stack.prometheus_url}/api/v1/query",
        params={"query": 'count by (instance) (longenc_queue_size{job="longenc"})'},
        timeout=10,
    ).json()
    instances = {result["metric"]["instance"] for result in query["data"]["result"]}
    assert instances == expected


def test_stopped_replica_drains_while_the_other_takes_new_requests(stack: Stack) -> None:
    victim, survivor = stack.replicas
    results: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def client(index: int) -> None:
        # Requests of about a second on one core, so that some are in flight at the signal.
        text = f"client {index} " + "word " * 1500
        while not stop.is_set():
            try:
                status: int | str = encode(stack.url, text, mode="dense")
            except httpx.HTTPError as error:
                status = repr(error)
            results.append((time.monotonic(), status))

    clients = [threading.Thread(target=client, args=(index,)) for index in range(6)]
    for thread in clients:
        thread.start()
    try:
        wait_until(lambda: len(results) >= 6, 120, "load running")
        stopped_at = time.monotonic()
        survivor_before = answered(survivor)
        podman("stop", "--time", "60", victim, what=f"stopping {victim}", timeout=90)
        exited_at = time.monotonic()
        time.sleep(10)  # new requests, with one replica gone
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=300)

    failures = [status for _, status in results if status != 200]
    assert failures == [], f"{len(failures)} of {len(results)} requests lost: {failures[:5]}"
    assert inspect(victim, "{{.State.ExitCode}}") == "0", logs(victim)
    draining = log_lines(victim, r"SIGTERM: draining \d+ requests in flight")
    assert draining, logs(victim)
    assert int(re.search(r"draining (\d+)", draining[0]).group(1)) >= 1, draining
    assert log_lines(victim, r"drained; shutting down")
    after_exit = [at for at, _ in results if at > exited_at]
    assert after_exit, "no request finished after the replica exited"
    assert answered(survivor) - survivor_before >= len(after_exit)
    assert exited_at - stopped_at < 60, "the drain ran into podman's stop timeout"
