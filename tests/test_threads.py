"""Threads follow the cores a process really has: its affinity, its cgroup quota, its share among workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hpo_action.train.threads import (
    SHARE_ENV,
    available_cores,
    busy_elsewhere,
    cgroup_cpu_quota,
    process_threads,
    worker_share,
)


def test_cgroup_v2_and_v1_quotas_are_read(tmp_path: Path):
    v2, v1 = tmp_path / "cpu.max", tmp_path / "v1"
    v2.write_text("150000 100000\n")
    assert cgroup_cpu_quota(v2, v1) == 1.5
    v2.write_text("max 100000\n")
    assert cgroup_cpu_quota(v2, v1) is None  # no quota
    v2.unlink()
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v2, v1) == 3.0
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(v2, v1) is None


def test_a_quota_caps_the_cores_counted(monkeypatch):
    monkeypatch.setattr("hpo_action.train.threads.cgroup_cpu_quota", lambda: 1.5)
    assert available_cores() == 1  # 1.5 CPUs of quota: one thread never waits for the second half
    monkeypatch.setattr("hpo_action.train.threads.cgroup_cpu_quota", lambda: None)
    assert available_cores() == len(os.sched_getaffinity(0))


def test_workers_share_the_cores_and_nobody_goes_above_them(monkeypatch):
    monkeypatch.setattr("hpo_action.train.threads.busy_elsewhere", lambda: 0)  # an idle machine
    cores = available_cores()
    assert worker_share(1) == cores and worker_share(cores * 4) == 1
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(SHARE_ENV, str(cores * 8))
    assert process_threads() == cores  # a share above the cores is capped
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert process_threads() == 1  # the user's lower setting wins


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to pin to one")
def test_a_process_pinned_to_one_core_runs_one_torch_thread():
    code = (
        "import os, torch; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from hpo_action.train.threads import limit_torch_threads; limit_torch_threads(); "
        "print(torch.get_num_threads())"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", SHARE_ENV)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert proc.stdout.strip() == "1"


def test_cores_other_processes_keep_busy_are_left_to_them(monkeypatch):
    """Threads that must meet at every operation stall when one waits for a core another process holds."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv(SHARE_ENV, raising=False)
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        assert busy_elsewhere() >= 2  # busy loops are always runnable
        assert process_threads() <= max(1, available_cores() - 2)
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
