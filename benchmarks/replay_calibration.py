"""Real studies against the replay's prediction, at equal settings: does the table replay predict what a real run of
the defaults picks?

Each real study is the shipped quickstart config run by the product's own code (`open_study`, `run_trials`, the
product's trial runner with replay rows, probes and the KL reference), one study seed each, for its configured
n_trials. Its pick (`chosen_trial`) is scored by the table: the true loss of the grid point nearest to it minus the
table's best. The replay runs the same config (the same n_trials, the product's defaults) over many study seeds ×
every training seed of the table. Per real study: where its true regret falls in the replay's distribution (the
randomized PIT value: uniform on [0, 1] when the replay is calibrated), whether it is inside the replay's 10-90%
range; overall: a Kolmogorov-Smirnov test of the PIT values against uniform and the medians side by side.

    python benchmarks/replay_calibration.py --real 10 --replays 100     # the real studies, then the replay
    python benchmarks/replay_calibration.py --replays 100 --reuse        # re-analyse the real studies on file

Writes benchmarks/results/replay_calibration.json and .png.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from curves import TASKS, session_runner, task_config
from efficiency_stats import bootstrap_median, finite
from hpo_efficiency import run_replays
from table_replay import RESULTS, Table

OUT = RESULTS / "replay_calibration.json"


def real_study(cfg: Any, runner: Any, seed: int, table: Table) -> dict[str, Any]:
    """One real study of `cfg` with search.seed = seed, scored by the table's truth."""
    from hpo_action.config import apply_overrides
    from hpo_action.search.optuna_backend.finalist import chosen_trial
    from hpo_action.search.optuna_backend.study import open_study, run_trials
    from hpo_action.search.space import trial_defaults

    started = time.perf_counter()
    folder = tempfile.mkdtemp(prefix="hpo-calibration-")
    cfg = apply_overrides(cfg, {"search.seed": seed, "search.workers": 0, "output.dir": folder}, source="calibration")
    runner.cfg = cfg
    study = open_study(cfg)
    run_trials(study, cfg, runner, target=cfg.search.n_trials)
    pick = chosen_trial(study)
    truth = table.true_losses()
    point = table.nearest({**trial_defaults(cfg), **pick.params}) if pick is not None else None
    steps = sum(int(t.user_attrs.get("steps") or 0) for t in study.trials)
    return {
        "seed": seed,
        "best_params": pick.params if pick is not None else None,
        "best_value": pick.value if pick is not None else None,
        "grid_point": list(point) if point is not None else None,
        "true_regret": truth[point] - min(truth.values()) if point is not None else None,
        "trials": len(study.trials),
        "steps": steps,
        "seconds": round(time.perf_counter() - started, 1),
    }


def pit(value: float, predicted: list[float], rng: random.Random) -> float:
    """The randomized probability integral transform of `value` under the replay's distribution (ties broken
    uniformly: the replay's regrets take few distinct values)."""
    below = sum(p < value for p in predicted) / len(predicted)
    equal = sum(p == value for p in predicted) / len(predicted)
    return below + rng.random() * equal


def compare(real: list[dict[str, Any]], predicted: list[float]) -> dict[str, Any]:
    from scipy.stats import kstest

    rng = random.Random(0)
    regrets = [r["true_regret"] for r in real]
    ordered = sorted(predicted)
    low, high = ordered[int(0.1 * len(ordered))], ordered[int(0.9 * len(ordered)) - 1]
    values = [pit(r, predicted, rng) for r in regrets]
    return {
        "real_regrets": regrets,
        "real_median_regret": statistics.median(regrets),
        "replay_median_regret": bootstrap_median(predicted),
        "replay_10_90": [low, high],
        "real_inside_10_90": sum(low <= r <= high for r in regrets),
        "pit": values,
        "ks_uniform_p": float(kstest(values, "uniform").pvalue),
        "replays": len(predicted),
    }


def plot(result: dict[str, Any], predicted: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    ordered = sorted(predicted)
    left.step(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], where="post", label="replay (ECDF)")
    for regret in result["real_regrets"]:
        left.axvline(regret, color="tab:red", alpha=0.4)
    left.set_xscale("symlog", linthresh=1e-3)
    left.set_xlabel("true regret of the pick")
    left.set_title("replay's distribution; real studies (red lines)")
    left.legend(fontsize=8)
    values = sorted(result["pit"])
    right.plot([0, 1], [0, 1], color="black", linestyle=":")
    right.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post", color="tab:red")
    right.set_xlabel("PIT of a real study under the replay")
    right.set_ylabel("fraction of real studies")
    right.set_title(f"calibration (KS p = {result['ks_uniform_p']:.2f})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="quickstart")
    parser.add_argument("--real", type=int, default=10, help="Real studies (study seeds 0..n-1).")
    parser.add_argument("--replays", type=int, default=100, help="Study seeds replayed (× each training seed).")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--reuse", action="store_true", help="Analyse the real studies already in the result file.")
    args = parser.parse_args()

    from hpo_action.session import quiet_libraries

    quiet_libraries()
    table = Table.load_or_exit(args.task)
    cfg = task_config(TASKS[args.task])
    if args.reuse:
        real = json.loads(OUT.read_text())["real"]
    else:
        runner = session_runner(cfg)
        real = []
        for seed in range(args.real):
            real.append(real_study(cfg, runner, seed, table))
            print(f"real study {seed}: {real[-1]}", flush=True)
            OUT.write_text(json.dumps({"real": real}, indent=2) + "\n")  # kept as it goes
    pairs = [(seed, s) for seed in range(args.replays) for s in table.seeds]
    trials = cfg.search.n_trials
    replays = run_replays([args.task], {"a": {}}, {"a": pairs}, trials, args.jobs)[args.task]["a"]
    predicted = [run.final_regret() for run in replays]
    result = {"task": args.task, "n_trials": trials, **compare(real, predicted), "real": real}
    OUT.write_text(json.dumps(finite(result), indent=2) + "\n")
    plot(result, predicted, OUT.with_suffix(".png"))
    print(
        f"real median regret {result['real_median_regret']:.4f}, replay {result['replay_median_regret']['median']:.4f} "
        f"[{result['replay_median_regret']['low']:.4f}, {result['replay_median_regret']['high']:.4f}]; "
        f"{result['real_inside_10_90']}/{len(real)} inside the replay's 10-90%; KS p = {result['ks_uniform_p']:.3f}"
    )


if __name__ == "__main__":
    main()
