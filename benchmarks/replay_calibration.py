"""Real studies against the replay's prediction, at equal settings, on both table tasks: does the table replay
predict what a real run of the defaults picks?

Each real study is the task's config (benchmarks/curves.py `task_config`: the quickstart, or the flat task's
overrides on it) run by the product's own code (`open_study`, `run_trials`, the product's trial runner with replay
rows, forgetting probes, the rung checks of issue 22 and the KL reference), one study seed each, for its configured
n_trials. Its pick (`chosen_trial`: the trial the product hands to the gate) is saved with the settings it ran at
(replay_calibration_real.json: the config, commit, data fingerprint, demo model hash, threads, library versions).
The analysis scores each pick by the table: the true loss of the grid point nearest to it minus the table's best
(recomputed from the table at every analysis, so a table that gains training seeds rescores the same picks). The
replay runs the same settings (the saved n_trials, the product's defaults) over many study seeds × every training
seed of the table. Per task: where each real study's true regret falls in the replay's distribution (the randomized
PIT value: uniform on [0, 1] when the replay is calibrated), how many fall inside the replay's 10-90% range, a
Kolmogorov-Smirnov test of the PIT values against uniform, the medians side by side, and P(regret ≤ ε) real against
replayed (ε: the table's pooled seed sd).

    python benchmarks/replay_calibration.py --real 10 --replays 100        # the real studies, then the replay
    python benchmarks/replay_calibration.py --replays 100 --reuse-real     # the replay side again, same real studies
    python benchmarks/replay_calibration.py --tasks flat --real 5 --first-seed 5 --real-only --real-file F
                                                   # a second process: study seeds 5-9 into its own file F
    python benchmarks/replay_calibration.py --tasks flat --real 6 --no-rung-checks --real-file F --out G
                                                   # the control: the product without issue 22's rung checks

`--reuse-real` runs no training: it reads the saved real studies, refuses them (exit 2) when the task's config or
libraries here differ from those they ran with, and recomputes the replay side and the calibration (after a change
of the replay, or of a table's truth). Writes benchmarks/results/replay_calibration.json and .png.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curves import TASKS, session_runner, task_config
from efficiency_stats import bootstrap_median, finite, proportion
from hpo_efficiency import run_replays
from table_replay import RESULTS, Replay, Table

OUT = RESULTS / "replay_calibration.json"
REAL = RESULTS / "replay_calibration_real.json"


@dataclass
class RealStudy:
    """One real study's pick and what it cost; `defaults` fill the grid dimensions the space does not search."""

    seed: int
    params: dict[str, Any] | None  # the chosen trial's parameters (None: no feasible completed trial)
    defaults: dict[str, Any]
    value: float | None
    trials: int
    pruned: int
    steps: int
    rung_checks: dict[str, int]  # rung-check verdict (forgot, spared; "continued": the old rule) → count
    seconds: float


@dataclass
class RealSet:
    """A task's real studies and the settings they ran at (table_manifest.pins: config, commit, data, versions)."""

    task: str
    n_trials: int
    settings: dict[str, Any]
    studies: list[RealStudy] = field(default_factory=list)
    rung_checks_off: bool = False  # a control: the product with issue 22's forgetting rung checks switched off

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> RealSet:
        studies = [RealStudy(**s) for s in raw["studies"]]
        return cls(raw["task"], raw["n_trials"], raw["settings"], studies, raw.get("rung_checks_off", False))


def real_study(cfg: Any, runner: Any, seed: int) -> RealStudy:
    """One real study of `cfg` with search.seed = seed, as the product runs it."""
    import optuna

    from hpo_action.config import apply_overrides
    from hpo_action.search.optuna_backend.finalist import chosen_trial
    from hpo_action.search.optuna_backend.forgetting_rungs import RUNGS_ATTR
    from hpo_action.search.optuna_backend.study import open_study, run_trials
    from hpo_action.search.space import trial_defaults

    started = time.perf_counter()
    folder = tempfile.mkdtemp(prefix="hpo-calibration-")
    cfg = apply_overrides(cfg, {"search.seed": seed, "search.workers": 0, "output.dir": folder}, source="calibration")
    runner.cfg = cfg
    study = open_study(cfg)
    run_trials(study, cfg, runner, target=cfg.search.n_trials)
    pick = chosen_trial(study)
    verdicts: dict[str, int] = {}
    for trial in study.trials:
        for _, verdict, _ in trial.user_attrs.get(RUNGS_ATTR) or []:
            verdicts[verdict] = verdicts.get(verdict, 0) + 1
    return RealStudy(
        seed=seed,
        params=dict(pick.params) if pick is not None else None,
        defaults=trial_defaults(cfg),
        value=pick.value if pick is not None else None,
        trials=len(study.trials),
        pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
        steps=sum(int(t.user_attrs.get("steps") or 0) for t in study.trials),
        rung_checks=verdicts,
        seconds=round(time.perf_counter() - started, 1),
    )


def run_real(task: str, seeds: range, path: Path, rung_checks_off: bool = False) -> RealSet:
    """The real studies of `task` (study seeds `seeds`), saved after each one so an interrupted run keeps them.
    `rung_checks_off`: the control that tells what the rung checks change (the objective gets no rung checks)."""
    from curves import _torch_threads
    from table_manifest import pins

    from hpo_action.search.optuna_backend import objective

    if rung_checks_off:
        objective.forgetting_rungs = lambda cfg, runner: None
    cfg = task_config(TASKS[task])
    runner = session_runner(cfg)
    real = RealSet(task, cfg.search.n_trials, pins(cfg, _torch_threads()), rung_checks_off=rung_checks_off)
    for seed in seeds:
        real.studies.append(real_study(cfg, runner, seed))
        print(f"{task} real study {seed}: {asdict(real.studies[-1])}", flush=True)
        save_real({task: real}, path)
    return real


def save_real(saved: dict[str, RealSet], path: Path) -> None:
    """Write `saved` over the same tasks in `path`, keeping the other tasks there (another process may be running
    them into the same file); written whole to a temporary file and renamed, so a reader never sees half of it."""
    kept = json.loads(path.read_text()) if path.is_file() else {}
    kept.update({task: asdict(real) for task, real in saved.items()})
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(kept, indent=2) + "\n")
    scratch.replace(path)


def load_real(path: Path) -> dict[str, RealSet]:
    """The saved real studies per task; a missing or malformed file is one line and exit 2."""
    try:
        raw = json.loads(path.read_text())
        return {task: RealSet.from_json(entry) for task, entry in raw.items()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"error: {path.name}: no saved real studies ({err}); run without --reuse-real first", file=sys.stderr)
        raise SystemExit(2) from None


def check_settings(real: RealSet, path: Path) -> None:
    """Refuse (exit 2) real studies whose config or libraries differ from the task's here: the replay would then
    predict another product than the one that ran."""
    from table_manifest import mismatches

    found = mismatches(real.settings, task_config(TASKS[real.task]))
    if found:
        print(
            f"error: {path.name}: the {real.task} real studies ran at other settings ({'; '.join(found)}); "
            "rerun them without --reuse-real",
            file=sys.stderr,
        )
        raise SystemExit(2)


def true_regrets(real: RealSet, table: Table) -> list[float]:
    """Each pick's true regret on the table; a study that hands nothing to the gate (no feasible completed trial)
    counts as infinite, as in the replay (Replay.final_regret), and is written as null."""
    truth = table.true_losses()
    best = min(truth.values())
    return [
        truth[table.nearest({**s.defaults, **s.params})] - best if s.params is not None else math.inf
        for s in real.studies
    ]


def pit(value: float, predicted: list[float], rng: random.Random) -> float:
    """The randomized probability integral transform of `value` under the replay's distribution (ties broken
    uniformly: the replay's regrets take few distinct values)."""
    below = sum(p < value for p in predicted) / len(predicted)
    equal = sum(p == value for p in predicted) / len(predicted)
    return below + rng.random() * equal


def compare(regrets: list[float], predicted: list[float], epsilon: float) -> dict[str, Any]:
    """The calibration of one task: PIT values and their KS test, the 10-90% range, medians, P(regret ≤ ε)."""
    from scipy.stats import kstest

    rng = random.Random(0)
    ordered = sorted(predicted)
    low, high = ordered[int(0.1 * len(ordered))], ordered[int(0.9 * len(ordered)) - 1]
    values = [pit(r, predicted, rng) for r in regrets]
    within = sum(r <= epsilon for r in regrets)
    return {
        "real_regrets": regrets,
        "real_median_regret": statistics.median(regrets),
        "replay_regrets": predicted,
        "replay_median_regret": bootstrap_median(predicted),
        "replay_10_90": [low, high],
        "real_inside_10_90": sum(low <= r <= high for r in regrets),
        "pit": values,
        "ks_uniform_p": float(kstest(values, "uniform").pvalue),
        "epsilon": epsilon,
        "real_within_epsilon": proportion(within, len(regrets)),
        "replay_within_epsilon": proportion(sum(p <= epsilon for p in predicted), len(predicted)),
        "replays": len(predicted),
    }


def replay_side(table: Table, n_trials: int, replays: int, jobs: int) -> list[Replay]:
    """The replays of the defaults at the real studies' n_trials: `replays` study seeds × every training seed of
    the table."""
    pairs = [(seed, s) for seed in range(replays) for s in table.seeds]
    return run_replays([table.task], {"a": {}}, {"a": pairs}, n_trials, jobs)[table.task]["a"]


def calibrate(real: RealSet, table: Table, replays: int, jobs: int) -> tuple[dict[str, Any], list[float]]:
    """One task's result (and the replay's regrets, for the plot)."""
    runs = replay_side(table, real.n_trials, replays, jobs)
    predicted = [run.final_regret() for run in runs]
    pooled = table.pooled_seed_sd()
    result = {
        "n_trials": real.n_trials,
        "real_studies": len(real.studies),
        "epsilon_ci": [pooled["low"], pooled["high"]],
        **compare(true_regrets(real, table), predicted, pooled["epsilon"]),
        "real_steps_median": statistics.median(s.steps for s in real.studies),
        "replay_steps_median": statistics.median(run.total_steps() for run in runs),
        "replay_trials_median": statistics.median(run.trials for run in runs),
        "real_seconds_median": statistics.median(s.seconds for s in real.studies),
    }
    return result, predicted


def manifest(saved: dict[str, RealSet], tables: dict[str, Table], replays: int, real_file: Path) -> dict[str, Any]:
    """What the result was computed from: the replay's commit, each table's pins, each real set's settings."""
    from table_manifest import commit

    def table_pins(task: str) -> dict[str, Any]:
        recorded = json.loads((RESULTS / f"curves_{task}.json").read_text())
        keys = ("commit", "demo_model_sha256", "data_fingerprint", "torch_threads", "rows", "extra_seeds")
        return {key: recorded.get(key) for key in keys}

    return {
        "replay_commit": commit(),
        "replays_per_training_seed": replays,
        "tables": {task: table_pins(task) for task in tables},
        "real": {task: _settings(real) for task, real in saved.items()},
        "real_file": real_file.name,
    }


def plot(results: dict[str, dict[str, Any]], predicted: dict[str, list[float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(len(results), 2, figsize=(11, 4.2 * len(results)), squeeze=False)
    for (task, result), (left, right) in zip(results.items(), axes, strict=True):
        ordered = sorted(predicted[task])  # no pick (infinite regret) last: the ECDF ends below 1 by their share
        shown = [v for v in ordered if math.isfinite(v)]
        left.step(shown, [(i + 1) / len(ordered) for i in range(len(shown))], where="post", label="replay (ECDF)")
        for regret in result["real_regrets"]:
            if math.isfinite(regret):
                left.axvline(regret, color="tab:red", alpha=0.4)
        left.axvline(result["epsilon"], color="black", linestyle="--", label="ε")
        left.set_xscale("symlog", linthresh=1e-3)
        left.set_xlabel("true regret of the pick")
        none = sum(not math.isfinite(r) for r in result["real_regrets"])
        left.set_title(f"{task}: replay's distribution; real studies (red; {none} without a pick)")
        left.legend(fontsize=8)
        values = sorted(result["pit"])
        right.plot([0, 1], [0, 1], color="black", linestyle=":")
        right.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post", color="tab:red")
        right.set_xlabel("PIT of a real study under the replay")
        right.set_ylabel("fraction of real studies")
        right.set_title(f"{task}: calibration (KS p = {result['ks_uniform_p']:.2f}, n = {len(values)})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def analyse(saved: dict[str, RealSet], replays: int, jobs: int, out: Path, real_file: Path) -> dict[str, Any]:
    """The calibration of every task in `saved`, written to `out` (+ .png)."""
    tables = {task: Table.load_or_exit(task) for task in saved}
    results, predicted = {}, {}
    for task, real in saved.items():
        results[task], predicted[task] = calibrate(real, tables[task], replays, jobs)
        results[task]["rung_checks_off"] = real.rung_checks_off
        r = results[task]
        median = r["replay_median_regret"]
        print(
            f"{task}: real median regret {r['real_median_regret']:.4f}, replay {median['median']:.4f} "
            f"[{median['low']:.4f}, {median['high']:.4f}]; {r['real_inside_10_90']}/{len(real.studies)} inside the "
            f"replay's 10-90%; KS p = {r['ks_uniform_p']:.3f}; within ε {r['real_within_epsilon']['hits']}/"
            f"{len(real.studies)} real vs {r['replay_within_epsilon']['p']:.2f} replayed",
            flush=True,
        )
    document = {"tasks": results, "manifest": manifest(saved, tables, replays, real_file), "real": _real_records(saved)}
    out.write_text(json.dumps(finite(document), indent=2) + "\n")
    plot(results, predicted, out.with_suffix(".png"))
    return document


def _settings(real: RealSet) -> dict[str, Any]:
    """A real set's pins, with the search section of its config (the whole config is in the real-study file)."""
    return {k: v for k, v in real.settings.items() if k != "config"} | {"search": real.settings["config"]["search"]}


def _real_records(saved: dict[str, RealSet]) -> dict[str, list[dict[str, Any]]]:
    keep = ("seed", "params", "value", "trials", "pruned", "steps", "rung_checks", "seconds")
    return {task: [{k: getattr(s, k) for k in keep} for s in real.studies] for task, real in saved.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="quickstart,flat")
    parser.add_argument("--real", type=int, default=10, help="Real studies per task (study seeds 0..n-1).")
    parser.add_argument("--first-seed", type=int, default=0, help="The first study seed of --real.")
    parser.add_argument("--replays", type=int, default=100, help="Study seeds replayed (× each training seed).")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--reuse-real", action="store_true", help="Recompute the replay side from the saved studies.")
    parser.add_argument("--real-only", action="store_true", help="Run and save the real studies, no analysis.")
    parser.add_argument("--real-file", type=Path, help=f"Where the real studies are kept (default: {REAL.name}).")
    parser.add_argument("--out", type=Path, help=f"Where the calibration is written (default: {OUT.name}).")
    parser.add_argument("--no-rung-checks", action="store_true", help="A control: real studies without rung checks.")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        print(f"error: --tasks: no task {unknown[0]!r}; choose from {', '.join(TASKS)}", file=sys.stderr)
        raise SystemExit(2)

    from hpo_action.session import quiet_libraries

    quiet_libraries()
    real_file, out = args.real_file or REAL, args.out or OUT  # read here, not at import: tests point them elsewhere
    if not args.reuse_real:
        for task in tasks:
            run_real(task, range(args.first_seed, args.first_seed + args.real), real_file, args.no_rung_checks)
    saved = load_real(real_file)
    if args.reuse_real:
        missing = [task for task in tasks if task not in saved]
        if missing:
            hint = "run without --reuse-real"
            print(f"error: {real_file.name}: no real studies of {missing[0]}; {hint}", file=sys.stderr)
            raise SystemExit(2)
        for task in tasks:
            check_settings(saved[task], real_file)
    if not args.real_only:
        analyse({task: saved[task] for task in tasks}, args.replays, args.jobs, out, real_file)


if __name__ == "__main__":
    main()
