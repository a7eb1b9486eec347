"""Calibrate the suggestion rule of `lr-find`: the range test on each task's defaults, 3 training seeds, against
the best learning rate measured for the task, for every candidate rule read off the same curves.

Tasks:

    quickstart   the learning-curve table's task (benchmarks/curves.py), built on the quickstart as it was then
                 (LoRA r 16 alpha 32, batch 8, 60 steps, no replay): the range test runs on that config (the
                 table's manifest); the best rate is the table's best configuration (seed-mean final eval_loss)
    flat         the second table's task: the same range test (its config differs only in the searched space),
                 against that table's best configuration (warmup and cosine decay searched too)
    quickstart-now  today's quickstart (replay 0.4, KL to the base 0.5, batch 16, 100 steps): the range test
                 on its defaults; the best rate from a sweep of 7 rates x 2 seeds at those defaults

    python benchmarks/lr_find_calibration.py               # ~26 min on 2 busy cores; writes
                                                           # results/lr_find_calibration.json
    python benchmarks/lr_find_calibration.py --rules-only  # the rules again, off the saved curves

The error of a rule on a task is suggestion / best rate (1 is perfect); the script prints it per rule and task
(the geometric mean over the seeds) and the worst factor over the tasks.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
QUICKSTART = ROOT / "examples" / "quickstart"
SEEDS = (0, 1, 2)
SWEEP = (1e-3, 2.15e-3, 4.64e-3, 1e-2, 2.15e-2, 4.64e-2, 1e-1)
SWEEP_SEEDS = (0, 1)


def table_best(task: str) -> dict[str, Any]:
    """The table's best configuration by seed-mean final validation loss, and its learning rate."""
    import pandas as pd

    frame = pd.read_parquet(RESULTS / f"curves_{task}.parquet")
    keys = [c for c in frame.columns if c not in ("train_seed", "steps", "values", "final", "status", "error")]
    keys = [k for k in keys if k not in ("run_steps", "seconds", "seconds_per_step")]
    mean = frame.groupby(keys)["final"].mean().reset_index()
    best = mean.loc[mean["final"].idxmin()]
    return {"rate": float(best["learning_rate"]), "loss": float(best["final"]), "config": best.to_dict()}


def table_config(task: str) -> Any:
    """The config the table was built with (its manifest), reading today's copy of the quickstart data."""
    from hpo_action.config import parse_config

    raw = json.loads((RESULTS / f"curves_{task}.json").read_text())["config"]
    for split in ("train", "validation", "test"):
        raw["data"][split] = str(QUICKSTART / Path(raw["data"][split]).name)
    raw["output"] = {"dir": tempfile.mkdtemp(prefix="hpo-lr-cal-")}
    raw["search"]["storage"] = None
    return parse_config(raw)


def now_config() -> Any:
    """Today's quickstart, the probes off (the range test and the sweep need no forgetting score)."""
    from hpo_action.config import apply_overrides, load_config

    cfg = load_config(QUICKSTART / "hpo.yaml")
    overrides = {"search.forgetting_constraint": False, "output.dir": tempfile.mkdtemp(prefix="hpo-lr-cal-")}
    return apply_overrides(cfg, overrides, source="calibration")


def runner_for(cfg: Any) -> Any:
    from rich.console import Console

    from hpo_action.data.loading import load_splits
    from hpo_action.session import quiet_libraries, trial_runner

    quiet_libraries()
    return trial_runner(cfg, load_splits(cfg.data), None, Console(stderr=True))


def range_tests(runner: Any, cfg: Any) -> list[dict[str, Any]]:
    """The product's range test (`lr_range_test`, 100 steps, 1e-6 to 1) on the defaults, once per seed."""
    from hpo_action.search.space import trial_defaults
    from hpo_action.train.lr_find import lr_range_test

    curves = []
    for seed in SEEDS:
        runner.cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
        found = lr_range_test(runner, trial_defaults(cfg), steps=100)
        curves.append({"seed": seed, **found.to_json()})
        print(f"  seed {seed}: suggestion {found.suggestion:.3g}, minimum {found.minimum:.3g}", flush=True)
    runner.cfg = cfg
    return curves


def sweep(runner: Any, cfg: Any) -> dict[str, Any]:
    """Final eval_loss of the defaults at each rate of SWEEP, per seed; the best rate by the seed mean."""
    from hpo_action.errors import TrialError
    from hpo_action.search.space import trial_defaults

    losses: dict[float, list[float]] = {}
    for rate in SWEEP:
        for seed in SWEEP_SEEDS:
            runner.cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
            try:
                value = runner.run({**trial_defaults(cfg), "learning_rate": rate}).value
            except TrialError:
                value = math.inf  # diverged
            losses.setdefault(rate, []).append(value)
            print(f"  sweep LR {rate:g} seed {seed}: {value:.4f}", flush=True)
    runner.cfg = cfg
    means = {rate: sum(v) / len(v) for rate, v in losses.items()}
    best = min(means, key=means.__getitem__)
    return {"rate": best, "loss": means[best], "losses": {str(k): v for k, v in losses.items()}}


def rules(curve: dict[str, Any]) -> dict[str, float]:
    """Every candidate rule, read off one range test's curve (the product's reading gives three of them)."""
    from hpo_action.train.lr_find import read_curve

    read = read_curve(curve["learning_rates"], curve["smoothed"])
    lowest, steepest = read.minimum, read.steepest
    return {
        "steepest descent (the rule before)": steepest,
        "minimum/10": lowest / 10,
        "minimum/3": lowest / 3,
        "minimum/2": lowest / 2,
        "midpoint(steepest, minimum)": math.sqrt(steepest * lowest),
        "1/2 along the longest descent": _along(curve, 1 / 2),
        "2/3 along the longest descent (the rule now)": read.suggestion,
        "3/4 along the longest descent": _along(curve, 3 / 4),
    }


def _along(curve: dict[str, Any], share: float) -> float:
    """The product's valley reading at another share of the way along the descent."""
    from hpo_action.train import lr_find

    kept, lr_find.VALLEY = lr_find.VALLEY, share
    try:
        return lr_find.read_curve(curve["learning_rates"], curve["smoothed"]).suggestion
    finally:
        lr_find.VALLEY = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(RESULTS / "lr_find_calibration.json"))
    parser.add_argument("--rules-only", action="store_true", help="Read the rules off the curves saved in --out.")
    args = parser.parse_args()
    if args.rules_only:
        saved = json.loads(Path(args.out).read_text())
        saved["errors"] = report(saved["tasks"])
        saved["manifest"]["rules_commit"] = _commit()
        Path(args.out).write_text(json.dumps(saved, indent=2) + "\n")
        return
    started = time.monotonic()
    tasks: dict[str, dict[str, Any]] = {}
    print("table config (quickstart, flat): range tests", flush=True)
    cfg = table_config("quickstart")
    curves = range_tests(runner_for(cfg), cfg)
    for task in ("quickstart", "flat"):
        tasks[task] = {"best": table_best(task), "curves": curves}
    print("today's quickstart: range tests and a sweep", flush=True)
    cfg = now_config()
    runner = runner_for(cfg)
    tasks["quickstart-now"] = {"curves": range_tests(runner, cfg), "best": sweep(runner, cfg)}
    errors = report(tasks)
    manifest = {
        "commit": _commit(),
        "data_sha256": {p.name: _sha(p) for p in sorted(QUICKSTART.glob("*.jsonl"))},
        "seeds": list(SEEDS),
        "sweep": {"rates": list(SWEEP), "seeds": list(SWEEP_SEEDS)},
        "wall_s": round(time.monotonic() - started, 1),
    }
    Path(args.out).write_text(json.dumps({"manifest": manifest, "tasks": tasks, "errors": errors}, indent=2) + "\n")
    print(f"wrote {args.out}")


def report(tasks: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per rule and task: the geometric mean over seeds of suggestion / best rate; printed as a table."""
    errors: dict[str, dict[str, float]] = {}
    for task, found in tasks.items():
        for curve in found["curves"]:
            for rule, value in rules(curve).items():
                errors.setdefault(rule, {}).setdefault(task, 0.0)
                errors[rule][task] += math.log(value / found["best"]["rate"]) / len(found["curves"])
    table = {rule: {task: math.exp(v) for task, v in by_task.items()} for rule, by_task in errors.items()}
    names = list(tasks)
    print("\n| rule | " + " | ".join(f"{t} (best {tasks[t]['best']['rate']:.3g})" for t in names) + " | worst factor |")
    print("|---|" + "---|" * (len(names) + 1))
    for rule, by_task in table.items():
        worst = max(max(r, 1 / r) for r in by_task.values())
        print(f"| {rule} | " + " | ".join(f"{by_task[t]:.2f}" for t in names) + f" | {worst:.2f} |")
    return table


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


if __name__ == "__main__":
    main()
