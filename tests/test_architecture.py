"""Imports flow one way (app -> models -> sparse_core), and sparse_core is pure tensor code."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT_PACKAGES = {"app", "models", "sparse_core"}
# What each package may import from the project and from third parties (stdlib is always fine).
ALLOWED_PROJECT = {"sparse_core": {"sparse_core"}, "models": {"models", "sparse_core"}}
# ninja: the build tool of the optional C++ kernel, which sparse_core/_native.py puts on PATH.
ALLOWED_THIRD_PARTY = {"sparse_core": {"torch", "ninja"}}


def top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED_PROJECT))
def test_package_imports_only_downstream_project_packages(package: str) -> None:
    files = package_files(package)
    assert files, f"{package}/ has no modules"
    for path in files:
        imported = top_level_imports(path) & PROJECT_PACKAGES
        forbidden = imported - ALLOWED_PROJECT[package]
        assert not forbidden, f"{path.relative_to(ROOT)} imports {sorted(forbidden)}"


def test_sparse_core_imports_only_torch_and_stdlib() -> None:
    for path in package_files("sparse_core"):
        third_party = top_level_imports(path) - sys.stdlib_module_names - PROJECT_PACKAGES
        extra = third_party - ALLOWED_THIRD_PARTY["sparse_core"]
        assert not extra, f"{path.relative_to(ROOT)} imports {sorted(extra)}"


def test_every_mode_lives_in_its_own_module() -> None:
    from sparse_core import MODES

    for name, mode in MODES.items():
        assert mode.name == name
        assert mode.kernel.__module__ == f"sparse_core.{name}", (
            f"the kernel of {name!r} should live in sparse_core/{name}.py"
        )
