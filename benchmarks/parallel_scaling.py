"""Parallel scaling: wall time of the same quickstart trials with 1 worker process and with 2, side by side.

Pruning is off and every trial trains the full budget, so both runs do the same number of optimizer steps;
only the number of worker processes differs. Each run is the real command (`hpo-action search --workers N`)
in its own output folder, timed from start to exit, model loads and tokenization included. The in-process
mode (`--workers 0`) is timed too: the price of crash isolation. Runs are interleaved, `--repeats` times,
and the medians are compared.

    python benchmarks/parallel_scaling.py [-c examples/quickstart/hpo.yaml] [--trials 12] [--repeats 2]

Prints the wall times and `ratio_2_vs_1` (below 0.5 would be more than linear), also for the trial phase
alone (first trial start to last trial end, from the study's timestamps: what is left once the fixed cost of
starting Python, loading and writing outputs is taken away), and writes benchmarks/results/parallel_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER_COUNTS = (0, 1, 2)


def timed_search(config: Path, output: Path, workers: int, trials: int) -> tuple[float, float]:
    """Wall seconds of the whole command, and of its trial phase (first trial start to last trial end)."""
    command = [
        sys.executable, "-m", "hpo_action", "search", "-c", str(config), "--output", str(output),
        "--workers", str(workers), "--set", f"search.n_trials={trials}",
        "--pruner", "none", "--sampler", "random", "--set", "search.timeout=null",
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((output / "summary.json").read_text())
    if summary["states"].get("COMPLETE", 0) != trials:
        raise SystemExit(f"expected {trials} complete trials, got {summary['states']}")
    return elapsed, trial_phase(output / "study.db", summary["study_name"])


def trial_phase(database: Path, name: str) -> float:
    import optuna

    study = optuna.load_study(study_name=name, storage=f"sqlite:///{database}")
    first = min(t.datetime_start for t in study.trials)
    last = max(t.datetime_complete for t in study.trials)
    return (last - first).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, default=ROOT / "examples" / "quickstart" / "hpo.yaml")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "parallel_scaling.json")
    args = parser.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)  # each mode sets threads as a user's run would

    seconds: dict[int, list[float]] = {n: [] for n in WORKER_COUNTS}
    phase: dict[int, list[float]] = {n: [] for n in WORKER_COUNTS}
    with tempfile.TemporaryDirectory(prefix="hpo-scaling-") as scratch:
        for repeat in range(args.repeats):
            for workers in WORKER_COUNTS:
                output = Path(scratch) / f"w{workers}-r{repeat}"
                whole, trials_only = timed_search(args.config, output, workers, args.trials)
                seconds[workers].append(whole)
                phase[workers].append(trials_only)
                line = f"repeat {repeat}: {workers} worker(s): {whole:.1f} s ({trials_only:.1f} s of trials)"
                print(line, flush=True)

    median = {n: statistics.median(v) for n, v in seconds.items()}
    median_phase = {n: statistics.median(v) for n, v in phase.items()}
    result = {
        "ratio_2_vs_1": round(median[2] / median[1], 3),
        "ratio_2_vs_1_trial_phase": round(median_phase[2] / median_phase[1], 3),
        "ratio_1_vs_in_process": round(median[1] / median[0], 3),
        "median_seconds": {f"workers_{n}": round(v, 2) for n, v in median.items()},
        "median_trial_phase_seconds": {f"workers_{n}": round(v, 2) for n, v in median_phase.items()},
        "seconds": {f"workers_{n}": [round(x, 2) for x in v] for n, v in seconds.items()},
        "trials": args.trials,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"median wall time: in-process {median[0]:.1f} s · 1 worker {median[1]:.1f} s · 2 workers {median[2]:.1f} s")
    print(f"ratio_2_vs_1 = {result['ratio_2_vs_1']} for the whole command (goal ≤ 0.6 on 2 cores)")
    print(f"ratio_2_vs_1_trial_phase = {result['ratio_2_vs_1_trial_phase']} (first trial start to last trial end)")
    print(f"ratio_1_vs_in_process = {result['ratio_1_vs_in_process']} (the price of a worker process)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
