"""The before/after loop for hpo-action's search defaults: strategy (a) of hpo_efficiency.py, run under
variants of its settings (warm start, Hyperband's reduction factor and first rung, TPE's start-up trials,
evaluation cadence) at the same seeds, trial budget and target as the full hpo_efficiency.py run.

    python benchmarks/hpo_defaults.py [--seeds 5] [--trials 16] [--only VARIANT ...] [--out FILE]

The target comes from benchmarks/results/hpo_efficiency.json (1% above the best of its 160-trial random
reference). Per variant: median best validation loss at the current defaults' compute, median steps to come
within 10% and 50% of the reference best, total steps and seconds. Writes benchmarks/results/hpo_defaults.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from hpo_efficiency import RESULTS, ROOT, best_so_far, best_within, run_strategy, strategy_config, to_target

VARIANTS: dict[str, dict[str, Any]] = {
    "current defaults": {},
    "TPE n_startup_trials 5 (the defaults before)": {"search.sampler_options": {"n_startup_trials": 5}},
    "no warm start": {"search.warm_start": False},
    "Hyperband reduction_factor 2": {"search.pruner_options": {"reduction_factor": 2}},
    "Hyperband min_resource 2 evaluations": {"search.pruner_options": {"min_resource": 20}},
    "evaluate every 5 steps": {"search.budget.eval_every": 5},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", default=str(ROOT / "examples" / "quickstart" / "hpo.yaml"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS), help="Run these variants (and the current).")
    parser.add_argument("--out", type=Path, default=RESULTS / "hpo_defaults.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers' renames, twice per trial
    chosen = {name: VARIANTS[name] for name in VARIANTS if not args.only or name in {"current defaults", *args.only}}

    from hpo_action.config import apply_overrides, load_config
    from hpo_action.data.loading import load_splits
    from hpo_action.data.tokenize import tokenize_splits
    from hpo_action.session import quiet_libraries
    from hpo_action.train.models import load_base_model
    from hpo_action.train.trial import TrialRunner

    quiet_libraries()
    reference_best = json.loads((RESULTS / "hpo_efficiency.json").read_text())["reference_best"]
    cfg = load_config(args.config)
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="hpo-defaults-"))
    base = load_base_model(cfg.model)
    train, validation, _ = tokenize_splits(load_splits(cfg.data), base.tokenizer, cfg.data, folder / "cache")

    curves: dict[str, list[list[tuple[int, float, float]]]] = {}
    for index, (name, overrides) in enumerate(chosen.items()):
        curves[name] = []
        for seed in range(args.seeds):
            variant = apply_overrides(
                strategy_config(cfg, "a", seed, args.trials, folder / str(index)), overrides, source=name
            )
            runner = TrialRunner(variant, base, train, validation)
            curves[name].append(best_so_far(run_strategy(variant, runner)))
        print(f"{name}: done at {time.monotonic() - started:.0f} s", flush=True)

    budget = statistics.median(run[-1][0] for run in curves["current defaults"])
    rows = []
    for name, runs in curves.items():
        row: dict[str, Any] = {
            "variant": name,
            "overrides": VARIANTS[name],
            "median_best_at_current_budget": statistics.median(best_within(run, budget) for run in runs),
            "median_best_at_end": statistics.median(run[-1][2] for run in runs),
            "median_total_steps": statistics.median(run[-1][0] for run in runs),
            "median_total_seconds": round(statistics.median(run[-1][1] for run in runs), 1),
        }
        for tolerance in (0.01, 0.10, 0.50):
            reach = [to_target(run, reference_best * (1 + tolerance))[0] for run in runs]
            row[f"reached_{tolerance:.0%}"] = sum(math.isfinite(s) for s in reach)
            row[f"median_steps_to_{tolerance:.0%}"] = statistics.median(reach)
        rows.append(row)

    print(f"reference best {reference_best:.4f}; equal budget = the current defaults' median {budget:.0f} steps")
    header = f"{'variant':40}{'best @ budget':>14}{'best @ end':>11}{'steps':>7}{'s':>7}{'≤10%':>6}{'≤50%':>6}"
    print(header)
    for row in rows:
        print(
            f"{row['variant']:40}{row['median_best_at_current_budget']:>14.4f}{row['median_best_at_end']:>11.4f}"
            f"{row['median_total_steps']:>7.0f}{row['median_total_seconds']:>7.1f}"
            f"{row['reached_10%']:>4}/{args.seeds}{row['reached_50%']:>4}/{args.seeds}"
        )
    result = {
        "reference_best": reference_best,
        "equal_budget_steps": budget,
        "seeds": args.seeds,
        "trials_per_study": args.trials,
        "variants": [{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in r.items()} for r in rows],
        "wall_s": round(time.monotonic() - started, 1),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
