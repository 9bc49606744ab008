"""The CPUs a process may use: cgroup v1 and v2 quotas read from fake hierarchies."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cpus import cgroup_cpu_limit, process_cpus, set_torch_threads, thread_count


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_v1(directory: Path, quota_us: int, period_us: int = 100000) -> None:
    write(directory / "cpu.cfs_quota_us", f"{quota_us}\n")
    write(directory / "cpu.cfs_period_us", f"{period_us}\n")


def test_v2_quota_of_a_container_that_sees_its_own_cgroup_as_the_root(tmp_path: Path) -> None:
    write(tmp_path / "proc", "0::/\n")
    write(tmp_path / "cgroup" / "cpu.max", "200000 100000\n")
    assert cgroup_cpu_limit(tmp_path / "cgroup", tmp_path / "proc") == 2.0


def test_v2_the_smallest_quota_on_the_way_up_wins(tmp_path: Path) -> None:
    """A pod's limit above the container's own (unlimited) cgroup."""
    root = tmp_path / "cgroup"
    write(tmp_path / "proc", "0::/kubepods/pod1/container\n")
    write(root / "kubepods" / "pod1" / "container" / "cpu.max", "max 100000\n")
    write(root / "kubepods" / "pod1" / "cpu.max", "150000 100000\n")
    write(root / "kubepods" / "cpu.max", "800000 100000\n")
    assert cgroup_cpu_limit(root, tmp_path / "proc") == 1.5


def test_v2_without_any_quota_is_unlimited(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(tmp_path / "proc", "0::/user.slice\n")
    write(root / "user.slice" / "cpu.max", "max 100000\n")
    assert cgroup_cpu_limit(root, tmp_path / "proc") is None


def test_v1_cpu_controller_quota(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(tmp_path / "proc", "5:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n")
    write_v1(root / "cpu,cpuacct", 300000)
    assert cgroup_cpu_limit(root, tmp_path / "proc") == 3.0


def test_v1_quota_of_minus_one_is_unlimited(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    write(tmp_path / "proc", "4:cpu,cpuacct:/\n")
    write_v1(root / "cpu,cpuacct", -1)
    assert cgroup_cpu_limit(root, tmp_path / "proc") is None


def test_v1_controller_mounted_under_its_own_name(tmp_path: Path) -> None:
    """/proc says "cpu,cpuacct" but the hierarchy is mounted as "cpu" (a symlink on most hosts)."""
    root = tmp_path / "cgroup"
    write(tmp_path / "proc", "4:cpu,cpuacct:/docker/abc\n")
    write_v1(root / "cpu", 50000)
    assert cgroup_cpu_limit(root, tmp_path / "proc") == 0.5


@pytest.mark.parametrize(
    ("proc", "cpu_max"),
    [
        ("0::/\n", "garbage\n"),
        ("0::/\n", "abc 100000\n"),
        ("0::/\n", "150000 0\n"),
        ("0::/\n", "\n"),
        ("\nnot a cgroup line\n0::/\n", "max 100000\n"),
    ],
    ids=["one field", "not a number", "zero period", "empty", "odd /proc lines"],
)
def test_malformed_files_read_as_unlimited(tmp_path: Path, proc: str, cpu_max: str) -> None:
    """Never an exception: the server reads these at startup."""
    write(tmp_path / "proc", proc)
    write(tmp_path / "cgroup" / "cpu.max", cpu_max)
    assert cgroup_cpu_limit(tmp_path / "cgroup", tmp_path / "proc") is None


def test_nothing_readable_is_unlimited(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(tmp_path / "cgroup", tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("affinity", "limit", "threads"),
    [(32, 2.0, 2), (32, 1.5, 2), (32, 0.5, 1), (4, 8.0, 4), (4, None, 4), (0, None, 1)],
)
def test_threads_follow_the_limit_rounded_up_within_the_affinity(
    affinity: int, limit: float | None, threads: int
) -> None:
    assert thread_count(affinity, limit) == threads


def test_this_process_gets_at_least_one_cpu_and_at_most_its_affinity() -> None:
    import os

    assert 1 <= process_cpus() <= len(os.sched_getaffinity(0))


@pytest.fixture
def restore_threads():
    import torch

    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_torch_threads_follow_the_cpus_the_process_may_use(monkeypatch, restore_threads) -> None:
    """A 1-CPU limit on a host whose cores torch would all use: one thread."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("app.cpus.process_cpus", lambda: 1)
    assert set_torch_threads(0) == 1


def test_torch_threads_never_rise_above_torchs_own_count(monkeypatch, restore_threads) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("app.cpus.process_cpus", lambda: 64)
    assert set_torch_threads(0) == restore_threads


def test_omp_num_threads_or_the_setting_decide_when_given(monkeypatch, restore_threads) -> None:
    import torch

    monkeypatch.setattr("app.cpus.process_cpus", lambda: 1)
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert set_torch_threads(0) == 2  # torch followed OMP_NUM_THREADS: left alone
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert set_torch_threads(3) == 3  # LONGENC_CPU_THREADS: as asked
