"""CPU threads: each process uses the cores it really has, shared among the workers.

Torch sizes its thread pool from the machine's core count, not from the process's CPU affinity, its container's
CPU quota or what else runs, and every worker does the same. On a busy or limited machine the threads then wait
for each other at every operation: trials ran ~100x slower under a 7x load (26x under 4x here). So the cores are
counted here (affinity, quota, less those other processes keep busy), split among the workers, and set on torch
before it does any work and before each trial.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

SHARE_ENV = "HPO_ACTION_THREADS"  # a worker's share of the cores, set by its supervisor
_CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
_LOADAVG = Path("/proc/loadavg")


def available_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (containers, CI runners)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def cgroup_cpu_quota(v2: Path = _CGROUP_V2, v1: Path = _CGROUP_V1) -> float | None:
    """CPUs granted by the cgroup quota (cgroup v2 `cpu.max`, else v1 `cfs_quota_us`), or None without one."""
    try:
        quota, period = v2.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
        period_us = int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def worker_share(workers: int) -> int:
    """Threads for each of `workers` processes that run at once on this machine's CPUs."""
    return max(1, available_cores() // max(workers, 1))


def busy_elsewhere(looks: int = 5, pause: float = 0.01) -> int:
    """Threads of other processes running right now: the runnable tasks of /proc/loadavg less this process's own
    running threads, the median of a few looks. 0 where /proc cannot tell."""
    counts = []
    for _ in range(looks):
        try:
            runnable = int(_LOADAVG.read_text().split()[3].partition("/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        counts.append(runnable - _own_running())
        time.sleep(pause)
    return max(0, sorted(counts)[len(counts) // 2])


def _own_running() -> int:
    running = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            running += stat.read_text().rpartition(")")[2].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return max(running, 1)  # at least the thread that is reading


def process_threads() -> int:
    """Threads for this process: the available cores less those other processes keep busy right now (threads
    that must meet at every operation stall when one of them waits for a core: 26x slower under a 4x load), or
    fewer when its supervisor gave it a share or the user set OMP_NUM_THREADS lower; at least one."""
    cores = available_cores()
    limits = [cores, max(1, cores - busy_elsewhere())]
    for name in (SHARE_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            limits.append(int(value))
    return min(limits)


def limit_torch_threads() -> None:
    """Size torch's intra-op pool to this process's threads: before torch does any work, and again before each
    trial, since the load of a shared machine changes."""
    import torch

    threads = process_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
