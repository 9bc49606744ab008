"""The scripts behind `make image` and the compose stand-ins: valid shell, and wired to the
Makefile. They run for real under `make test-image` (tests/image)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.deploy.files import ROOT

SCRIPTS = sorted((ROOT / "deploy").rglob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_scripts_parse_and_can_be_run(script: Path) -> None:
    shell = "bash" if script.read_text().startswith("#!/usr/bin/env bash") else "sh"
    result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert script.stat().st_mode & 0o111, f"{script.name} is not executable"


def make_dry_run(target: str) -> str:
    result = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_image_builds_a_longenc_image_with_the_script() -> None:
    assert "deploy/image/build.sh" in make_dry_run("image")
    default = subprocess.run(
        ["make", "-s", "--eval", "print-image: ; @echo $(IMAGE)", "print-image"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert "longenc" in default.stdout


def test_make_test_image_runs_the_image_tests() -> None:
    assert "LONGENC_IMAGE_TESTS=1" in make_dry_run("test-image")
    assert "tests/image" in make_dry_run("test-image")
