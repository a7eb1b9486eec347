"""How far the table replay's prediction is from real studies, and what `search.lr_bounds: auto` does, replayed.

The real studies are those of `real_studies.py --lr-bounds` (benchmarks/results/lr_bounds_effect.json): the
defaults, with the configured learning-rate range and with `lr_bounds: auto`, each run until its training steps
(the range test's included) reach the budget, 5 seeds per task. Here the same two arms are replayed against
the tables over 100 study seeds × every training seed, each stopped the way the real loop stops (after the trial
that reaches the budget; the auto arm searches the range the real range test chose and starts with the range
test's steps spent). Per arm and task: the replay's median true regret at the budget (bootstrap 95% CI) and its
10-90% range beside the real runs' regrets, and the trials the budget buys in each.

    python benchmarks/replay_vs_real.py           # ~5 min on 2 cores

Writes benchmarks/results/replay_vs_real.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from typing import Any

from efficiency_stats import bootstrap_median, finite
from hpo_efficiency import run_replays
from table_replay import RESULTS, Replay, Table


def at_budget(run: Replay, budget: float) -> tuple[float, int]:
    """The incumbent's true regret and the trial count once the trial that reaches `budget` steps has ended."""
    for index, steps in enumerate(run.steps):
        if steps >= budget:
            return run.regret[index], index + 1
    return run.final_regret(), run.trials


def arm_overrides(table: Table, lr_range: list[float] | None) -> dict[str, Any]:
    """The defaults (no overrides), or the defaults searching the learning rate in the range test's window."""
    if lr_range is None:
        return {}
    space = dict(table.config["search"]["space"])
    space["learning_rate"] = {**space["learning_rate"], "low": lr_range[0], "high": lr_range[1], "log": True}
    return {"space": space}


def compare(real_runs: list[dict[str, Any]], replays: list[Replay], budget: float) -> dict[str, Any]:
    regrets, trials = zip(*(at_budget(run, budget) for run in replays), strict=True)
    real = [r["true_regret"] for r in real_runs]
    ordered = sorted(regrets)
    low, high = ordered[int(0.1 * len(ordered))], ordered[int(0.9 * len(ordered)) - 1]
    predicted = bootstrap_median(list(regrets))
    return {
        "replays": len(replays),
        "replay_median_regret": predicted,
        "replay_mean_regret": statistics.fmean(r for r in regrets if math.isfinite(r)),
        "replay_10_90": [low, high],
        "replay_median_trials": statistics.median(trials),
        "real_regrets": real,
        "real_median_regret": statistics.median(real),
        "real_mean_regret": statistics.fmean(real),
        "real_trials": [r["trials"] for r in real_runs],
        "real_inside_10_90": sum(low <= r <= high for r in real),
        "gap_median": statistics.median(real) - predicted["median"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--allow-stale", action="store_true", help="Replay tables marked stale, as recorded.")
    args = parser.parse_args()
    started = time.monotonic()
    real = json.loads((RESULTS / "lr_bounds_effect.json").read_text())
    budget = real["budget_steps"]
    from hpo_action.search.lr_window import AUTO_STEPS

    result: dict[str, Any] = {"budget_steps": budget, "range_test_steps": AUTO_STEPS, "tasks": {}}
    for task, arms in real["tasks"].items():
        table = Table.load_or_exit(task, allow_stale=args.allow_stale)
        lr_range = arms["auto"]["runs"][0]["lr_range"]  # the range test is deterministic: one window per task
        strategies = {"configured": arm_overrides(table, None), "auto": arm_overrides(table, lr_range)}
        pairs = [(seed, train_seed) for seed in range(args.seeds) for train_seed in table.seeds]
        replays = run_replays(
            [task], strategies, dict.fromkeys(strategies, pairs), args.trials, args.jobs, allow_stale=args.allow_stale
        )[task]
        rows = {
            "configured": compare(arms["configured"]["runs"], replays["configured"], budget),
            "auto": compare(arms["auto"]["runs"], replays["auto"], budget - AUTO_STEPS),
        }
        rows["auto"]["lr_range"] = lr_range
        result["tasks"][task] = rows
        for arm, row in rows.items():
            print(
                f"{task} {arm}: replay median regret {row['replay_median_regret']['median']:.3f} "
                f"[{row['replay_median_regret']['low']:.3f}, {row['replay_median_regret']['high']:.3f}], "
                f"10-90% {row['replay_10_90'][0]:.3f}..{row['replay_10_90'][1]:.3f}, "
                f"{row['replay_median_trials']} trials; real median {row['real_median_regret']:.3f} "
                f"({row['real_inside_10_90']}/{len(row['real_regrets'])} inside), trials {row['real_trials']}",
                flush=True,
            )
    result["wall_s"] = round(time.monotonic() - started, 1)
    (RESULTS / "replay_vs_real.json").write_text(json.dumps(finite(result), indent=2) + "\n")
    print(f"wrote {RESULTS / 'replay_vs_real.json'} in {result['wall_s']} s")


if __name__ == "__main__":
    main()
