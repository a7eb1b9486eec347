"""The quickstart's trial phase with and without an artificial CPU load, before and after the thread limit.

Torch sizes its thread pool from the machine's core count. A process that may use fewer cores (CPU affinity, a
container's quota) or that shares them with other work then runs more threads than it has cores, and OpenMP
threads that wait for each other spin on cores they do not get. hpo-action now counts the cores it really has
(affinity, cgroup quota) and splits them among its workers.

Each cell runs the same trials (the baseline's quickstart config, random sampler with a fixed seed, no pruning,
no warm start, no timeout) in a fresh output folder and reports the trial phase: the sum of the trials' own wall
times in summary.json, which leaves out the process start. The load is `load - 1` busy processes per available core
(so a "4x" load leaves a fair share of a quarter), pinned to the same cores. "before" runs the code of
`--baseline` (a git revision, checked out into a temporary worktree); "after" runs this checkout.

    python benchmarks/cpu_load.py --baseline 4403235 --loads 1 4 --cores all 1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart" / "hpo.yaml"
RESULTS = ROOT / "benchmarks" / "results"


def _busy(cores: list[int], count: int) -> list[subprocess.Popen]:
    """`count` processes that spin on `cores`: a load the scheduler must share with the trials."""
    code = f"import os; os.sched_setaffinity(0, {cores!r})\nwhile True: pass"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def _trial_phase(code_root: Path, config: Path, cores: list[int], n_trials: int, out: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(code_root)  # this code, ahead of the installed package
    command = [
        "taskset", "-c", ",".join(map(str, cores)),
        sys.executable, "-m", "hpo_action", "search", "-c", str(config), "--output", str(out),
        "--n-trials", str(n_trials), "--sampler", "random", "--pruner", "none", "--seed", "0",
        "--set", "search.warm_start=false", "--set", "search.timeout=null",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=code_root)
    if proc.returncode != 0:
        raise SystemExit(f"{code_root}: search failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    return sum(float(t["seconds"] or 0) for t in summary["trials"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision of the code before the thread limit")
    parser.add_argument("--loads", type=int, nargs="+", default=[1, 4], help="load factors (1: no extra load)")
    parser.add_argument("--cores", nargs="+", default=["all", "1"], help="'all' or a number of cores to pin to")
    parser.add_argument("--n-trials", type=int, default=3)
    args = parser.parse_args()

    available = sorted(os.sched_getaffinity(0))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpo-cpu-load-") as scratch:
        before = Path(scratch) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before), args.baseline], cwd=ROOT, check=True)
        config = before / QUICKSTART.relative_to(ROOT)  # the baseline's quickstart: both versions can read it
        try:
            for cores_arg in args.cores:
                cores = available if cores_arg == "all" else available[: int(cores_arg)]
                for load in args.loads:
                    for version, code_root in (("before", before), ("after", ROOT)):
                        load_procs = _busy(cores, (load - 1) * len(cores))
                        try:
                            out = Path(scratch) / f"{version}-{len(cores)}-{load}"
                            seconds = _trial_phase(code_root, config, cores, args.n_trials, out)
                        finally:
                            for proc in load_procs:
                                proc.kill()
                        row = {"version": version, "cores": len(cores), "load": load, "trial_phase_s": seconds}
                        print(json.dumps(row), flush=True)
                        rows.append(row)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)

    def phase(version: str, cores: int, load: int) -> float:
        return next(r["trial_phase_s"] for r in rows if (r["version"], r["cores"], r["load"]) == (version, cores, load))

    print("\ncores | load | before (s) | after (s) | slowdown before | slowdown after")
    slowdowns = []
    for cores in sorted({r["cores"] for r in rows}, reverse=True):
        for load in args.loads:
            b, a = phase("before", cores, load), phase("after", cores, load)
            sb, sa = b / phase("before", cores, args.loads[0]), a / phase("after", cores, args.loads[0])
            slowdowns.append({"cores": cores, "load": load, "slowdown_before": sb, "slowdown_after": sa})
            print(f"{cores} | {load}x | {b:.1f} | {a:.1f} | {sb:.2f}x | {sa:.2f}x")
    RESULTS.mkdir(exist_ok=True)
    result = {
        "baseline": args.baseline,
        "n_trials": args.n_trials,
        "machine_cores": len(available),
        "rows": rows,
        "slowdowns": slowdowns,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (RESULTS / "cpu_load.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
