"""How many CPUs this process may really use: its affinity, capped by its cgroup's CPU quota.

torch starts an intra-op thread per CPU of the process's affinity mask (MKL builds: per physical
core). In a container with a CPU limit but no cpuset (Kubernetes' default CPU manager, `docker
run --cpus`), the mask holds every core of the node while the kernel lets the container run only
`limit` CPUs' worth of time per period: 32 threads on a 2-CPU limit spend most of each period
throttled. The limit is the cgroup's CFS quota (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` /
`cpu.cfs_period_us`), at the process's own cgroup or any above it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _ratio(quota: str, period: str) -> float | None:
    """quota ÷ period when both are positive integers; None for "max", -1 or anything else."""
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:
        return None
    return quota_us / period_us if quota_us > 0 and period_us > 0 else None


def _quota_v2(directory: Path) -> float | None:
    try:
        fields = (directory / "cpu.max").read_text().split()
    except OSError:
        return None
    return _ratio(*fields) if len(fields) == 2 else None


def _quota_v1(directory: Path) -> float | None:
    try:
        quota = (directory / "cpu.cfs_quota_us").read_text().strip()
        period = (directory / "cpu.cfs_period_us").read_text().strip()
    except OSError:
        return None
    return _ratio(quota, period)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs' worth of time per period this process's cgroups allow (the smallest quota from its
    own cgroup up to the root), or None when no quota applies or none can be read."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        lines = []
    candidates: list[tuple[Path, Callable[[Path], float | None]]] = []
    for line in lines:
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        relative = path.lstrip("/")
        if controllers == "":  # cgroup v2, one unified hierarchy
            candidates += [(root / relative, _quota_v2)]
        elif "cpu" in controllers.split(","):  # cgroup v1's cpu controller
            candidates += [(root / controllers / relative, _quota_v1), (root / "cpu", _quota_v1)]
    candidates += [(root, _quota_v2)]  # a container's own view: its cgroup mounted at the root
    limits = []
    for start, read in candidates:
        directory = start
        while True:
            limit = read(directory)
            if limit is not None:
                limits.append(limit)
            if directory == root or root not in directory.parents:
                break
            directory = directory.parent
    return min(limits, default=None)


def thread_count(affinity: int, limit: float | None) -> int:
    """Threads for `affinity` CPUs under a CPU `limit` (None: none): the limit rounded up (a
    1.5-CPU limit keeps 2 threads busy part of the time), at most the affinity, at least 1."""
    if limit is None:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(limit)))


def process_cpus() -> int:
    """thread_count() of this process: its affinity mask and its cgroups' CPU limit."""
    return thread_count(len(os.sched_getaffinity(0)), cgroup_cpu_limit())


def set_torch_threads(requested: int) -> int:
    """Set torch's intra-op threads before anything runs: `requested` if above 0; with 0, at
    most process_cpus() (never more than torch's own default, which may count physical cores
    only), unless OMP_NUM_THREADS is set, which torch has followed already. Returns the count."""
    import torch

    if requested > 0:
        torch.set_num_threads(requested)
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(min(torch.get_num_threads(), process_cpus()))
    return torch.get_num_threads()
