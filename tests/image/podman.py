"""podman, driven from the tests: images built by the project's scripts, containers and their logs.

The settings come from `make test-image` (CONTAINERS_CONF, IMAGE); run alone, the same defaults
apply. Every failure names the piece that failed and carries what the tool said.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("IMAGE", "localhost/longenc:cpu")
CONTAINERS_CONF = ROOT / "deploy" / "image" / "containers.conf"


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    env.setdefault("BUILDAH_ISOLATION", "chroot")
    env.setdefault("IMAGE", IMAGE)
    return env


def run(
    argv: list[str],
    *,
    what: str,
    timeout: float = 120,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run a command; with check, a failure fails the test, naming `what` and the output's tail."""
    try:
        result = subprocess.run(
            argv,
            cwd=ROOT,
            env=environment() | (env or {}),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        output = (error.stdout or b"")[-3000:]
        pytest.fail(f"{what}: no answer within {timeout:.0f} s: {' '.join(argv)}\n{output!r}")
    if check and result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        pytest.fail(f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n{tail}")
    return result


def podman(*args: str, what: str, timeout: float = 120, check: bool = True) -> str:
    return run(["podman", *args], what=what, timeout=timeout, check=check).stdout.strip()


def require_podman() -> None:
    """podman is installed and can start a container here; if not, say exactly why."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `make image-deps` installs it (Debian: podman runc)")
    podman("info", what="podman info (is the storage or the runtime set up?)")


def require_containers() -> None:
    """This host can run a container at all: the base image runs `true`; if not, skip, saying why.

    The base image comes from the project's own script (pulled, or made with debootstrap), which
    must work: a failure there fails the test.
    """
    base = run(
        [str(ROOT / "deploy/image/base-image.sh"), os.environ.get("IMAGE_BASE", "ubuntu:24.04")],
        what="making the base image",
        timeout=900,
    ).stdout.strip()
    probe = ["podman", "run", "--rm", "--network", "none", base, "true"]
    result = run(probe, what="running a container of the base image", check=False)
    if result.returncode != 0:
        pytest.skip(
            f"this host cannot run containers: `{' '.join(probe)}` exited {result.returncode}: "
            f"{(result.stdout + result.stderr).strip()[-1500:]}"
        )


def build(script: str, *, what: str, timeout: float) -> float:
    """Run one of the project's build scripts; seconds it took."""
    started = time.monotonic()
    run([str(ROOT / script)], what=what, timeout=timeout)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def inspect(container: str, template: str) -> str:
    return podman("inspect", "--format", template, container, what=f"inspect {container}")


def logs(container: str) -> str:
    return run(["podman", "logs", container], what=f"logs of {container}", check=False).stderr


def wait_healthy(container: str, timeout: float) -> float:
    """Run the image's own HEALTHCHECK until it passes; seconds it took.

    podman schedules health checks with systemd timers; where there is no systemd, nothing runs
    them, so the test runs the same check itself (`podman healthcheck run`), as the timer would.
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if inspect(container, "{{.State.Running}}") != "true":
            pytest.fail(f"{container} stopped before its health check passed:\n{logs(container)}")
        check = run(["podman", "healthcheck", "run", container], what="health check", check=False)
        if check.returncode == 0:
            return time.monotonic() - started
        time.sleep(2)
    pytest.fail(
        f"{container}: health check still failing after {timeout:.0f} s:\n{logs(container)}"
    )


def metric_samples(text: str, name: str) -> dict[tuple, float]:
    """Samples of one series in Prometheus text: {sorted label items: value}."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


def container_url(container: str, url: str) -> str:
    """GET a URL from inside a container (the image has Python, not curl)."""
    code = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    )
    return podman("exec", container, "python", "-c", code, what=f"GET {url} in {container}")


def log_lines(container: str, pattern: str) -> list[str]:
    return [line for line in logs(container).splitlines() if re.search(pattern, line)]
