"""Real (not replayed) studies on the two table tasks, to check what the table replay predicts:

    --lr-bounds   `search.lr_bounds: auto` against the configured bounds, at equal total compute (the range
                  test's steps are paid out of the study's budget), defaults otherwise
    --defaults    the defaults before and after the change made on the replay's evidence, at equal compute

Each study runs the product's code (open_study, run_trials, the real TrialRunner) one trial at a time until its
training steps reach the budget. Its pick is scored by the table: the true loss (mean over the table's training
seeds) of the grid point nearest to the best trial, minus the table's best; the replay's prediction for the same
strategy and budget is printed beside it.

    python benchmarks/real_studies.py --lr-bounds --seeds 5 --budget 600
    python benchmarks/real_studies.py --defaults --seeds 3 --budget 600

Writes benchmarks/results/lr_bounds_effect.json or defaults_confirm.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from curves import TASKS, session_runner, task_config
from table_replay import RESULTS, Table


def real_study(cfg: Any, runner: Any, budget: int, folder: Path, lr_auto: bool) -> dict[str, Any]:
    """One study until `budget` training steps are spent (the range test's steps included)."""
    from hpo_action.search.lr_window import AUTO_STEPS
    from hpo_action.search.optuna_backend import lr_bounds
    from hpo_action.search.optuna_backend.study import open_study, run_trials
    from hpo_action.search.space import trial_defaults
    from hpo_action.train.lr_find import lr_range_test

    started = time.perf_counter()
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(folder)})})
    spent = 0
    if lr_auto:
        cfg = cfg.model_copy(update={"search": cfg.search.model_copy(update={"lr_bounds": "auto"})})
        found = lr_range_test(runner, trial_defaults(cfg), steps=AUTO_STEPS)
        cfg = lr_bounds.resolve(cfg, lambda: found.suggestion)  # the product's narrowing of the range
        spent = found.steps
    study = open_study(cfg)
    count = 0
    while spent < budget:
        count += 1
        run_trials(study, cfg, runner, target=count)
        trial = study.trials[-1]
        spent += int(trial.user_attrs.get("steps") or max(trial.intermediate_values, default=0))
    best = study.best_trial
    space = cfg.search.space["learning_rate"]
    return {
        "best_params": best.params,
        "best_value": best.value,
        "trials": len(study.trials),
        "steps": spent,
        "lr_range": [space.low, space.high],
        "seconds": round(time.perf_counter() - started, 1),
    }


def true_regret(table: Table, params: dict[str, Any], defaults: dict[str, Any]) -> float:
    truth = table.true_losses()
    return truth[table.nearest({**defaults, **params})] - min(truth.values())


def _wait_for_table(task: str) -> Table:
    while not (RESULTS / f"curves_{task}.parquet").is_file():
        time.sleep(30)
    return Table.load_or_exit(task)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr-bounds", action="store_true")
    parser.add_argument("--defaults", action="store_true")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=600)
    parser.add_argument("--tasks", default="quickstart,flat")
    parser.add_argument("--after", default="{}", help="JSON search overrides of the 'after' defaults.")
    args = parser.parse_args()

    from hpo_action.config import apply_overrides
    from hpo_action.search.space import trial_defaults
    from hpo_action.session import quiet_libraries

    quiet_libraries()
    arms: dict[str, dict[str, Any]]
    if args.lr_bounds:
        name, arms = "lr_bounds_effect", {"configured": {}, "auto": {"lr_auto": True}}
    else:
        name = "defaults_confirm"
        arms = {"before": {}, "after": {"overrides": json.loads(args.after)}}
    results: dict[str, Any] = {"budget_steps": args.budget, "seeds": args.seeds, "tasks": {}}
    for task_name in args.tasks.split(","):
        base_cfg = task_config(TASKS[task_name])
        folder = Path(tempfile.mkdtemp(prefix=f"hpo-real-{task_name}-"))
        runner = session_runner(base_cfg)  # the product's runner: replay rows, probes, KL reference
        rows: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
        for seed in range(args.seeds):
            for arm, spec in arms.items():
                overrides = {f"search.{k}": v for k, v in spec.get("overrides", {}).items()}
                cfg = apply_overrides(base_cfg, {**overrides, "search.seed": seed, "search.workers": 0})
                outcome = real_study(cfg, runner, args.budget, folder / f"{arm}-{seed}", spec.get("lr_auto", False))
                outcome["defaults"] = trial_defaults(cfg)
                rows[arm].append(outcome)
                print(f"{task_name} {arm} seed {seed}: {outcome}", flush=True)
        del runner
        table = _wait_for_table(task_name)  # the table may still be building while the studies run
        for runs in rows.values():
            for outcome in runs:
                outcome["true_regret"] = true_regret(table, outcome["best_params"], outcome.pop("defaults"))
        results["tasks"][task_name] = {
            arm: {
                "median_true_regret": statistics.median(r["true_regret"] for r in runs),
                "mean_true_regret": statistics.fmean(r["true_regret"] for r in runs),
                "median_best_value": statistics.median(r["best_value"] for r in runs),
                "runs": runs,
            }
            for arm, runs in rows.items()
        }
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({t: {a: v["median_true_regret"] for a, v in r.items()} for t, r in results["tasks"].items()}))


if __name__ == "__main__":
    main()
