"""HPO efficiency from learning-curve tables: every strategy replayed through hpo-action's own study code
(benchmarks/table_replay.py) over many study seeds × every training seed of the table, scored by the *true*
regret of the configuration it picks (its mean final loss over the training seeds minus the table's best).

Strategies, on each task's own search space (benchmarks/curves.py):

    a  hpo-action defaults (the product's current sampler, pruner and warm start)
    b  random search, no pruning
    c  TPE, no pruning
    d  grid search (4 points per range, seeded order), no pruning
    e  transformers' hyperparameter_search recipe: LR log-uniform 1e-6..1e-4, Optuna's default TPE, no pruning
    f  GPSampler + Hyperband
    g  TPE + Hyperband, stopped by a stagnation rule (no better trial in 10)
    o  the oracle pruner (knows each curve's final value) with the defaults' sampler: the limit of pruning

Metrics per strategy (medians with bootstrap 95% CIs over the replays): the final true regret, the regret at
equal compute (training steps: the defaults' median spend), the steps until the true regret first reaches ≤ ε,
the steps until it reaches ε and *stays* there to the end of the study (Kaplan-Meier median, censored at the
study's budget), and P(regret ≤ ε) at 25/50/100% of equal compute (Wilson CIs); ε is the training-seed standard
deviation pooled over the table's best configurations (Table.pooled_seed_sd, with its CI). The ratios compare (a)
against (b), (c) and (e); the oracle fraction of a strategy is the oracle's KM median steps to stay within ε ÷
the strategy's (1: as good as the limit).

A table whose manifest does not match the code and config under test, or one marked stale, is refused (exit 2);
`--allow-stale` replays a stale table as recorded (e.g. --tasks quickstart60,flat60). Under the forgetting
constraint the product's rung checks read the table's probe side file (curves.py --probes); without it the table is
refused unless `--no-rung-checks` replays the pruner without them (the result's manifest says `rung_checks: false`).

    python benchmarks/hpo_efficiency.py                  # both tables, 100 study seeds × 3 training seeds
    python benchmarks/hpo_efficiency.py --cycle-seeds --random-trials 160   # RESULTS.md's run:
                                                         # training seed = study seed mod 3, (b) 160 trials
    python benchmarks/hpo_efficiency.py --quick          # CI: the shipped quickstart table, a few replays
    python benchmarks/hpo_efficiency.py --variants       # the before/after table of candidate defaults
    python benchmarks/hpo_efficiency.py --tasks quickstart --strategies abco --cycle-seeds   # RESULTS.md, 2026-12

Writes benchmarks/results/hpo_efficiency.json (+ .png); nothing about speed is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from efficiency_stats import (
    BUDGETS,
    bootstrap_median,
    bootstrap_ratio,
    finite,
    km_ratio,
    km_summary,
    proportion,
    stagnated,
)
from table_replay import NO_RUNG_CHECKS, RESULTS, Replay, Table, replay

STRATEGIES: dict[str, tuple[str, dict[str, Any]]] = {
    "a": ("hpo-action defaults", {}),
    "b": ("random, no pruning", {"sampler": "random", "pruner": "none", "warm_start": False}),
    "c": ("TPE, no pruning", {"sampler": "tpe", "pruner": "none", "warm_start": False}),
    "d": ("grid, no pruning", {"sampler": "grid", "pruner": "none", "warm_start": False}),
    "e": (
        "transformers hyperparameter_search recipe",
        {
            "sampler": "tpe",
            "pruner": "none",
            "warm_start": False,
            "sampler_options": {"n_startup_trials": 10, "multivariate": False},
        },
    ),
    "f": ("GPSampler + Hyperband", {"sampler": "gp", "pruner": "hyperband"}),
    "g": ("TPE + Hyperband + stagnation stop", {"sampler": "tpe", "pruner": "hyperband"}),
    "o": ("oracle pruner (knows each final value), the defaults' sampler", {}),
}
BUDGET_FRACTIONS = (0.25, 0.5, 1.0)  # of equal compute, for P(regret ≤ ε)
# Candidate defaults (changes of strategy (a), one at a time): the before/after table of RESULTS.md.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "v0": ("defaults before (TPE 3 start-up, multivariate; Hyperband rf 3 from the 1st eval; warm start)", {}),
    "v1": ("TPE n_startup_trials 10", {"sampler_options": {"n_startup_trials": 10}}),
    "v2": ("TPE univariate", {"sampler_options": {"multivariate": False}}),
    "v3": ("no warm start", {"warm_start": False}),
    "v4": ("Hyperband reduction_factor 2", {"pruner_options": {"reduction_factor": 2}}),
    "v5": ("Hyperband min_resource 2 evaluations", {"pruner_options": {"min_resource": "2 evaluations"}}),
    "v6": ("successive halving", {"pruner": "successive_halving"}),
    "v7": ("median pruner", {"pruner": "median"}),
    "v8": ("no pruning", {"pruner": "none"}),
}
# (Until 2026-12 a row v9 "evaluate every 20 steps" stood here: on a 10-step table with Hyperband's first rung at
# min_resource it was v5 again, the same experiment counted twice.)
TRIALS = 40
_TABLES: dict[str, Table] = {}
TABLES_DIR = [RESULTS]  # where the tables are read from (--tables)


def strategy_config(table: Table, key: str, overrides: dict[str, Any], trials: int) -> Any:
    """The table's task config (the product's defaults for what it does not set) with one strategy's search. The
    sections that shape a curve come from the table (Table.load checked them against today's); the others (the gate,
    evaluation) from today's task config, whose options may have changed since the table was built."""
    from curves import TASKS, task_config
    from table_manifest import CURVE_SECTIONS, config_pin

    from hpo_action.config import HpoConfig

    raw = json.loads(json.dumps(table.config))
    if table.task in TASKS:
        raw = {**config_pin(task_config(TASKS[table.task])), **{k: raw[k] for k in CURVE_SECTIONS if k in raw}}
    search = raw["search"]
    for name in ("sampler", "pruner", "warm_start", "sampler_options", "pruner_options"):
        search.pop(name, None)  # the product's defaults, unless the strategy sets them
    budget = {**search.get("budget", {}), **overrides.get("budget", {})}
    search.update({**overrides, "budget": budget, "n_trials": trials, "timeout": None, "workers": 0})
    if search.get("pruner_options", {}).get("min_resource") == "2 evaluations":
        search["pruner_options"] = {"min_resource": 2 * budget["eval_every"]}
    if key == "d":
        search["sampler_options"] = {"grid_points": 4}
    if key == "e":
        search["space"] = {**search["space"], "learning_rate": {"low": 1e-6, "high": 1e-4, "log": True}}
        for name in list(search["space"]):
            if name != "learning_rate":
                search["space"].pop(name)  # the recipe searches the learning rate; the rest stay at the defaults
    return HpoConfig.model_validate(raw)


def _replay_job(job: tuple[str, str, dict[str, Any], int, int, int, bool]) -> tuple[str, str, int, int, Replay]:
    import warnings

    warnings.filterwarnings("ignore")  # Optuna's experimental-API and heartbeat notes, thousands of times
    task, key, overrides, trials, study_seed, train_seed, allow_stale = job
    if task not in _TABLES:
        _TABLES[task] = Table.load(task, TABLES_DIR[0], allow_stale)
    table = _TABLES[task]
    truth = table.true_losses()
    cfg = strategy_config(table, key, overrides, trials)
    stop = stagnated(10) if key == "g" else None
    result = replay(table, cfg, study_seed, train_seed, truth, stop, oracle=key == "o")
    return task, key, study_seed, train_seed, result


def run_replays(
    tasks: list[str],
    strategies: dict[str, dict[str, Any]],
    pairs: dict[str, list[tuple[int, int]]],
    trials: int,
    jobs: int,
    trials_of: dict[str, int] | None = None,
    allow_stale: bool = False,
) -> dict[str, dict[str, list[Replay]]]:
    """Every (task, strategy, (study seed, training seed)) replay, on `jobs` processes; in the order of pairs.
    `trials_of` gives some strategies a longer study than `trials`."""
    work = [
        (task, key, overrides, (trials_of or {}).get(key, trials), seed, train_seed, allow_stale)
        for task in tasks
        for key, overrides in strategies.items()
        for seed, train_seed in pairs[key]
    ]
    results: dict[str, dict[str, list[Replay]]] = {t: {k: [] for k in strategies} for t in tasks}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for task, key, _, _, result in pool.map(_replay_job, work, chunksize=8):
            results[task][key].append(result)
    return results


def task_summary(table: Table, replays: dict[str, list[Replay]], labels: dict[str, str]) -> dict[str, Any]:
    """Per strategy: final regret, regret at equal compute, steps to ε; the ratios of (a) to the anchors."""
    truth = table.true_losses()
    best_point = min(truth, key=truth.__getitem__)
    pooled = table.pooled_seed_sd()
    epsilon = pooled["epsilon"]
    equal = bootstrap_median([r.total_steps() for r in replays["a"]])["median"]
    stays = {key: _stay_times(runs, epsilon) for key, runs in replays.items()}
    rows = {}
    for key, runs in replays.items():
        rows[key] = {
            "label": labels[key],
            "replays": len(runs),
            "final_regret": bootstrap_median([r.final_regret() for r in runs]),
            "regret_at_equal_compute": bootstrap_median([r.regret_at(equal) for r in runs]),
            "steps_to_epsilon": bootstrap_median([r.steps_to(epsilon) for r in runs]),
            "reached_epsilon": sum(math.isfinite(r.steps_to(epsilon)) for r in runs),
            "steps_to_stay_within_epsilon": km_summary(*stays[key]),
            "p_within_epsilon": {
                f"{fraction:.0%}": proportion(sum(r.regret_at(fraction * equal) <= epsilon for r in runs), len(runs))
                for fraction in BUDGET_FRACTIONS
            },
            "oracle_fraction": km_ratio(stays["o"], stays[key]) if "o" in stays else None,
            "total_steps": bootstrap_median([r.total_steps() for r in runs]),
            "regret_by_budget": {b: bootstrap_median([r.regret_at(b) for r in runs]) for b in BUDGETS},
        }
    to_eps = {key: [r.steps_to(epsilon) for r in runs] for key, runs in replays.items()}
    anchors = (("random", "b"), ("tpe_no_pruning", "c"), ("hf_default", "e"))
    ratios = {
        f"ratio_vs_{name}": bootstrap_ratio(to_eps["a"], to_eps[key]) if key in to_eps and "a" in to_eps else None
        for name, key in anchors
    }
    stay_ratios = {
        f"stay_ratio_vs_{name}": km_ratio(stays["a"], stays[key]) if key in stays and "a" in stays else None
        for name, key in anchors
    }
    return {
        "best_configuration": dict(zip(table.grid, best_point, strict=True)),
        "best_true_loss": truth[best_point],
        "epsilon": epsilon,
        "epsilon_ci": [pooled["low"], pooled["high"]],
        "epsilon_rule": f"training-seed sd pooled over the {pooled['configurations']} best configurations "
        f"(chi-square 95% CI, {pooled['df']} df)",
        "best_configuration_seed_sd": table.seed_sd(best_point),
        "equal_compute_steps": equal,
        "configurations": len(truth),
        "training_seeds": table.seeds,
        **ratios,
        **stay_ratios,
        "strategies": rows,
    }


def _stay_times(runs: list[Replay], epsilon: float) -> tuple[list[float], list[bool]]:
    """Each replay's steps until it stays within ε, and whether it did (False: censored at its budget)."""
    pairs = [r.steps_to_stay(epsilon) for r in runs]
    return [t for t, _ in pairs], [event for _, event in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI mode: the quickstart table, a few replays.")
    parser.add_argument("--seeds", type=int, default=100, help="Study seeds per strategy (× each training seed).")
    parser.add_argument("--trials", type=int, default=TRIALS)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--tasks", default="quickstart,flat")
    parser.add_argument("--strategies", default="".join(STRATEGIES))
    parser.add_argument(
        "--cycle-seeds", action="store_true", help="One training seed per study seed (seed mod n), not each."
    )
    parser.add_argument(
        "--random-trials", type=int, help="Trials of (b), so that its median replay reaches ε (default: --trials)."
    )
    parser.add_argument("--out", default="hpo_efficiency", help="Name of the result files in benchmarks/results.")
    parser.add_argument("--gp-seeds", type=int, help="Study seeds of (f), whose sampler is slow (default: --seeds).")
    parser.add_argument("--variants", action="store_true", help="The candidate defaults (one training seed each).")
    parser.add_argument("--tables", default=str(RESULTS), help="Folder of the curves_<task> tables.")
    parser.add_argument("--allow-stale", action="store_true", help="Replay tables marked stale, as recorded.")
    parser.add_argument(
        "--no-rung-checks", action="store_true", help="Replay the pruner without the forgetting rung checks."
    )
    args = parser.parse_args()
    if args.no_rung_checks:
        os.environ[NO_RUNG_CHECKS] = "1"  # read by Table.load in every worker process
    TABLES_DIR[0] = Path(args.tables)
    tasks = ["quickstart"] if args.quick else args.tasks.split(",")
    tables = {task: Table.load_or_exit(task, TABLES_DIR[0], args.allow_stale) for task in tasks}
    if args.variants:
        return variants_main(args, tables)

    from hpo_action.session import quiet_libraries

    quiet_libraries()
    started = time.monotonic()
    keys = "abco" if args.quick else args.strategies
    seeds, trials = (4, 12) if args.quick else (args.seeds, args.trials)
    train_seeds = tables[tasks[0]].seeds[:1] if args.quick else tables[tasks[0]].seeds
    strategies = {key: STRATEGIES[key][1] for key in keys}
    every = [(seed, train_seed) for seed in range(seeds) for train_seed in train_seeds]
    # GPSampler costs ~6 s of CPU per 40-trial study here (vs ~0.5 s for TPE): one training seed per study seed.
    cycled = [(seed, train_seeds[seed % len(train_seeds)]) for seed in range(seeds)]
    gp_pairs = cycled[: args.gp_seeds or seeds]
    pairs = {key: gp_pairs if key == "f" else cycled if args.cycle_seeds else every for key in strategies}
    longer = {"b": args.random_trials} if args.random_trials else None
    replays = run_replays(tasks, strategies, pairs, trials, 1 if args.quick else args.jobs, longer, args.allow_stale)
    labels = {key: STRATEGIES[key][0] for key in keys}
    per_task = {task: task_summary(tables[task], replays[task], labels) for task in tasks}
    result = headline(per_task, seeds, 1 if args.cycle_seeds else len(train_seeds), trials, args.quick)
    result["manifest"] = {task: manifest_pins(task) for task in tasks}
    result["random_trials"] = args.random_trials or trials
    result["gp_study_seeds"] = len(gp_pairs) if "f" in strategies else None
    result["wall_s"] = round(time.monotonic() - started, 1)
    print_summary(per_task)
    name = "hpo_efficiency_quick" if args.quick else args.out
    earlier = RESULTS / f"{name}.json"
    kept = json.loads(earlier.read_text()) if earlier.is_file() else {}
    if "league" in kept:  # league.py's key: its peers are not rerun here
        result["league"] = kept["league"]
    earlier.write_text(json.dumps(finite(result), indent=2) + "\n")
    from efficiency_plot import plot

    plot(per_task, RESULTS / f"{name}.png")
    print(f"wrote {RESULTS / name}.json and .png in {result['wall_s']} s")


def manifest_pins(task: str) -> dict[str, Any]:
    """The pins of the table a result was replayed from (its manifest without the config and the grid), and
    whether the forgetting rung checks were replayed (from the probe side file, whose pins are added)."""
    manifest = json.loads((TABLES_DIR[0] / f"curves_{task}.json").read_text())
    pins = {k: v for k, v in manifest.items() if k not in ("config", "grid", "machine")}
    side = TABLES_DIR[0] / f"curves_{task}_probes.json"
    pins["rung_checks"] = not os.environ.get(NO_RUNG_CHECKS) and side.is_file()
    if pins["rung_checks"]:
        probes = json.loads(side.read_text())
        pins["probes"] = {k: probes[k] for k in ("commit", "demo_model_sha256", "data_fingerprint", "curves_match")}
    return pins


def variants_main(args: argparse.Namespace, tables: dict[str, Table]) -> None:
    """The before/after table: each candidate default over `seeds` study seeds, training seed = seed mod 3."""
    started = time.monotonic()
    tasks = list(tables)
    seeds_of_table = tables[tasks[0]].seeds
    pairs = [(seed, seeds_of_table[seed % len(seeds_of_table)]) for seed in range(args.seeds)]
    strategies = {key: overrides for key, (_, overrides) in VARIANTS.items()}
    replays = run_replays(
        tasks, strategies, dict.fromkeys(strategies, pairs), args.trials, args.jobs, allow_stale=args.allow_stale
    )
    labels = {key: label for key, (label, _) in VARIANTS.items()}
    per_task = {}
    for task in tasks:
        renamed = {key: runs for key, runs in replays[task].items()}
        renamed["a"] = renamed.pop("v0")  # the ratios and the equal compute are those of the defaults before
        summary = task_summary(tables[task], renamed, {**labels, "a": labels["v0"]})
        summary["strategies"] = {("v0" if k == "a" else k): v for k, v in summary["strategies"].items()}
        per_task[task] = summary
    print_summary(per_task)
    result = {"study_seeds": args.seeds, "trials_per_study": args.trials, "variants": labels, "tasks": per_task}
    result["manifest"] = {task: manifest_pins(task) for task in tasks}
    result["wall_s"] = round(time.monotonic() - started, 1)
    (RESULTS / "hpo_defaults_table.json").write_text(json.dumps(finite(result), indent=2) + "\n")
    print(f"wrote {RESULTS / 'hpo_defaults_table.json'} in {result['wall_s']} s")


def headline(per_task: dict[str, Any], seeds: int, train_seeds: int, trials: int, quick: bool) -> dict[str, Any]:
    """The four historical fields (the worse task's ratio: the goal is on both), then the new ones."""

    def worst(name: str) -> float | None:
        values = [t[name]["ratio"] if t[name] else None for t in per_task.values()]
        return None if any(v is None for v in values) else max(values)

    def stays(t: dict[str, Any]) -> dict[str, Any]:
        steps = {key: row["steps_to_stay_within_epsilon"] for key, row in t["strategies"].items()}
        ratios = {name: t[name] for name in t if name.startswith("stay_ratio_vs_")}
        p_within = {key: row["p_within_epsilon"] for key, row in t["strategies"].items()}
        return {"steps_km_median": steps, **ratios, "p_within_epsilon_at_budget": p_within}

    return {
        "ratio_vs_random": worst("ratio_vs_random"),
        "ratio_vs_tpe_no_pruning": worst("ratio_vs_tpe_no_pruning"),
        "ratio_vs_hf_default": worst("ratio_vs_hf_default"),
        "seeds": seeds * train_seeds,
        "regret_at_equal_compute": {
            task: {key: row["regret_at_equal_compute"]["median"] for key, row in t["strategies"].items()}
            for task, t in per_task.items()
        },
        "stays_within_eps": {task: stays(t) for task, t in per_task.items()},
        "oracle_fraction": {
            task: {key: row["oracle_fraction"] for key, row in t["strategies"].items() if key != "o"}
            for task, t in per_task.items()
        },
        "epsilon": {task: t["epsilon"] for task, t in per_task.items()},
        "study_seeds": seeds,
        "training_seeds_per_study_seed": train_seeds,
        "trials_per_study": trials,
        "quick": quick,
        "tasks": per_task,
    }


def print_summary(per_task: dict[str, Any]) -> None:
    for task, t in per_task.items():
        print(
            f"\n{task}: ε = {t['epsilon']:.4f} [{t['epsilon_ci'][0]:.4f}, {t['epsilon_ci'][1]:.4f}] "
            f"({t['epsilon_rule']}); best true loss {t['best_true_loss']:.4f}"
        )
        print(
            f"{'':4}{'strategy':44}{'final regret':>24}{'regret @ equal':>24}{'steps to ε':>20}{'reached':>8}"
            f"{'steps to stay in ε (KM)':>26}{'stayed':>8}{'P(≤ε) @100%':>13}{'oracle fraction':>22}"
        )
        for key, row in t["strategies"].items():
            cells = [_cell(row[name]) for name in ("final_regret", "regret_at_equal_compute", "steps_to_epsilon")]
            reached = f"{row['reached_epsilon']}/{row['replays']}"
            stay = row["steps_to_stay_within_epsilon"]
            oracle = _cell(row["oracle_fraction"], "ratio") if row["oracle_fraction"] else "undefined"
            print(
                f"({key}) {row['label'][:44]:44}{cells[0]:>24}{cells[1]:>24}{cells[2]:>20}{reached:>8}"
                f"{_cell(stay):>26}{stay['events']:>8}{row['p_within_epsilon']['100%']['p']:>13.2f}{oracle:>22}"
            )
        for name in ("ratio_vs_random", "ratio_vs_tpe_no_pruning", "ratio_vs_hf_default"):
            ratio, stay_ratio = t[name], t["stay_" + name]
            print(
                f"  {name}: first touch {ratio and _cell(ratio, 'ratio')}; "
                f"stays {_cell(stay_ratio, 'ratio') if stay_ratio else 'undefined'}"
            )


def _cell(stats: dict[str, Any], key: str = "median") -> str:
    value, low, high = stats[key], stats["low"], stats["high"]
    return f"{_num(value)} [{_num(low)}, {_num(high)}]"


def _num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "inf"
    return f"{value:.4g}"


if __name__ == "__main__":
    main()
