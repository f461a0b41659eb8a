"""How many CPUs this process may really use: a pod's CPU limit, not the node's core count."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def affinity_cores() -> int:
    """The CPUs this process may be scheduled on (taskset, cgroup cpusets), not the host's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def usable_cores(root: Path = CGROUP_ROOT) -> int:
    """`affinity_cores`, capped by the cgroup's CFS quota rounded up: a pod limited to 2 CPUs
    on a 64-core node sees all 64 in its affinity, and as many threads would be throttled to
    the quota."""
    cores = affinity_cores()
    quota = cfs_quota(root)
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def cfs_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs of CFS quota (quota / period) or None when unlimited or unreadable: cgroup v2's
    ``cpu.max`` ("max 100000" or "200000 100000"), else v1's ``cpu/cpu.cfs_quota_us`` (-1 when
    unlimited) over ``cpu/cpu.cfs_period_us`` (the kernel's cgroup-v2.rst and sched-bwc.rst)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else _ratio(int(quota), int(period))
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return _ratio(quota, period)


def _ratio(quota: int, period: int) -> float | None:
    return quota / period if quota > 0 and period > 0 else None
