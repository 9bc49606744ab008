"""deploy/gpu_claim.py: replicas sharing a claims folder each get a GPU of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.files import ROOT

GPU_CLAIM = ROOT / "deploy" / "gpu_claim.py"
# The server stand-in: says which GPU it was given, then holds it until its stdin closes.
SERVER = "import os, sys; print(os.environ.get('CUDA_VISIBLE_DEVICES')); sys.stdin.read()"


class Replica:
    def __init__(self, claims_dir: Path, gpus: int, environment: dict[str, str]) -> None:
        command = [sys.executable, str(GPU_CLAIM), "--gpus", str(gpus)]
        command += ["--claims-dir", str(claims_dir), "--", sys.executable, "-c", SERVER]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )

    def gpu(self) -> str:
        """The GPU the server was started with; fails if the replica exited instead."""
        line = self.process.stdout.readline().strip()
        assert line, f"replica exited {self.process.wait()}: {self.process.stderr.read()}"
        return line

    def stop(self) -> int:
        if self.process.stdin and not self.process.stdin.closed:
            self.process.stdin.close()
        return self.process.wait(timeout=30)


@pytest.fixture
def start_replica(tmp_path: Path) -> Iterator:
    environment = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    replicas: list[Replica] = []

    def start(gpus: int, **variables: str) -> Replica:
        replica = Replica(tmp_path / "claims", gpus, environment | variables)
        replicas.append(replica)
        return replica

    yield start
    for replica in replicas:
        replica.stop()


def test_each_replica_gets_a_different_gpu(start_replica) -> None:
    first, second = start_replica(gpus=2), start_replica(gpus=2)
    assert {first.gpu(), second.gpu()} == {"0", "1"}


def test_replica_beyond_the_gpu_count_fails_clearly(start_replica) -> None:
    start_replica(gpus=1).gpu()
    extra = start_replica(gpus=1)
    assert extra.process.wait(timeout=30) == 1
    assert "all 1 GPUs are claimed" in extra.process.stderr.read()


def test_a_stopped_replica_frees_its_gpu(start_replica) -> None:
    first = start_replica(gpus=2)
    assert first.gpu() == "0"
    assert first.stop() == 0
    assert start_replica(gpus=2).gpu() == "0"


def test_without_gpus_the_command_runs_unchanged(start_replica) -> None:
    assert start_replica(gpus=0).gpu() == "None"


def test_an_operator_choice_is_kept(start_replica) -> None:
    assert start_replica(gpus=2, CUDA_VISIBLE_DEVICES="1").gpu() == "1"
