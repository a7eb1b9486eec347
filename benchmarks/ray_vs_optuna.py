"""PBT and ASHA on Ray Tune against the Optuna defaults, side by side in one run on the quickstart task (issue 24
item 5): each method runs the whole product path (`hpo_action.pipeline.run`: search, best trial scored on the test
split, gated against the base model) once per seed, on the same CPU share.

Equal footing: one core for everything (the process and its children are pinned to it, so a local Ray gets one trial
slot and the Optuna backend its one worker), one torch thread, the quickstart's config and space (learning rate and
rank; its replay mixing and forgetting constraint included), the same steps per trial and evaluation cadence. PBT
trains `--population` trials of `--max-steps` each (copies continue a checkpoint: no extra steps); ASHA (Ray's random
search) and the Optuna defaults (TPE + Hyperband) get `--trials` trials, which their stopping brings close to PBT's
steps; every run's steps are recorded and shown.

Ray's overhead per trial against the Optuna backend: (Ray's search seconds - the Optuna backend's seconds per step
x Ray's steps) / Ray's trials, with the Optuna seconds per step from the same seed. The same in CPU seconds (this
process and the processes it started that ended by the run's end) is recorded too, but for the Ray methods it is a
lower bound: Ray's worker processes that end after its shutdown returns are missed.

    python benchmarks/ray_vs_optuna.py [--seeds 5] [--population 4] [--trials 5] [--max-steps 40] [--eval-every 10]
    python benchmarks/ray_vs_optuna.py --quick     # a smoke run (one seed, a few steps); not part of CI
    python benchmarks/ray_vs_optuna.py --rescan /tmp/ray-vs-optuna-XXXX   # re-read a run's kept folders

Writes benchmarks/results/ray_vs_optuna.json (ray_vs_optuna_quick.json with --quick), with a manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from table_manifest import pins

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("pbt", "asha", "optuna")
DECISIONS = ("promote", "reject", "inconclusive", "no winner")


def method_config(method: str, seed: int, args: argparse.Namespace, out: Path) -> Any:
    """The quickstart config for one method and seed: the product's defaults except what the comparison fixes."""
    import yaml

    from hpo_action.config import parse_config

    quickstart = ROOT / "examples" / "quickstart"
    raw = yaml.safe_load((quickstart / "hpo.yaml").read_text())
    search = raw["search"]
    search.update(seed=seed, budget={"max_steps": args.max_steps, "eval_every": args.eval_every})
    search["n_trials"] = args.population if method == "pbt" else args.trials
    if method != "optuna":
        search["backend"] = "ray"
        search["ray"] = {"scheduler": method, "cpus_per_trial": 1}
    raw["output"] = {"dir": str(out)}
    return parse_config(raw, base_dir=quickstart)


def adopt_orphans() -> None:
    """Become the subreaper of every process started below (Ray's raylet starts its workers; they outlive their
    parent at shutdown): their CPU time then counts in this process's RUSAGE_CHILDREN once reaped."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and every descendant that has ended, the ended ones reaped."""
    import resource

    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def one_run(method: str, seed: int, args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """The whole product path for one method and seed; what the comparison reads from its outputs."""
    from rich.console import Console

    from hpo_action.errors import TrialError
    from hpo_action.pipeline import run

    out = scratch / f"{method}-{seed}"
    cfg = method_config(method, seed, args, out)
    cpu, started = cpu_seconds(), time.perf_counter()
    with open(os.devnull, "w") as quiet:
        try:
            decision: str = run(cfg, console=Console(file=quiet)).decision
        except TrialError:  # no feasible completed trial: nothing to gate, which is a result too
            decision = "no winner"
    wall = time.perf_counter() - started
    time.sleep(2)  # Ray's last processes end after shutdown returns
    cpu = cpu_seconds() - cpu
    return {
        "method": method,
        "seed": seed,
        **outputs(out),
        "decision": decision,
        "run_seconds": round(wall, 2),
        "run_cpu_seconds": round(cpu, 2),
    }


def outputs(out: Path) -> dict[str, Any]:
    """What the comparison reads from a run's folder (summary.json, gate.json when there was a winner to gate)."""
    from hpo_action.search.summary import RunSummary

    summary = RunSummary.read(out / "summary.json")
    gated = out / "gate.json"
    primary = (json.loads(gated.read_text()).get("primary") or {}) if gated.is_file() else {}
    completed = [t.value for t in summary.trials if t.state == "COMPLETE" and t.value is not None]
    return {
        "best_eval_loss": summary.best.value if summary.best else None,
        # the lowest loss any completed trial reached, forgetting margin or not: what the search alone found
        "best_any_eval_loss": min(completed) if completed else None,
        "feasible": summary.selection.feasible if summary.selection else None,
        "best_params": summary.best.params if summary.best else None,
        "trials": summary.n_trials,
        "states": summary.states,
        "steps": summary.total_steps,
        "search_seconds": summary.elapsed_s,
        "trial_seconds": round(sum(t.seconds or 0.0 for t in summary.trials), 2),
        "metric": primary.get("metric"),
        "gain": primary.get("delta"),
        "copied": sum(1 for t in summary.trials if len(t.schedule) > 1),
    }


def rescan(folder: Path, name: str) -> None:
    """Re-read the kept run folders of a finished (or cut) run into its results file, with today's fields."""
    path = RESULTS / name
    result = json.loads(path.read_text())
    result["runs"] = [{**r, **outputs(folder / f"{r['method']}-{r['seed']}")} for r in result["runs"]]
    result["summary"] = summarize(result["runs"])
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(show(result["summary"]))


def overheads(runs: list[dict[str, Any]], key: str) -> dict[str, list[float]]:
    """Per Ray method and seed: its `key` seconds beyond the Optuna backend's seconds per step for its steps, per
    trial (the same seed's Optuna run gives the rate)."""
    rate = {r["seed"]: r[key] / r["steps"] for r in runs if r["method"] == "optuna" and r["steps"]}
    found: dict[str, list[float]] = {}
    for r in runs:
        if r["method"] != "optuna" and r["seed"] in rate:
            extra = r[key] - rate[r["seed"]] * r["steps"]
            found.setdefault(r["method"], []).append(round(extra / r["trials"], 2))
    return found


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: mean and spread over seeds of the best validation loss, the gate's counts and gain, steps, times."""
    extra, cpu_extra = overheads(runs, "search_seconds"), overheads(runs, "run_cpu_seconds")
    table = {}
    for method in METHODS:
        rows = [r for r in runs if r["method"] == method]
        if not rows:
            continue
        losses = [r["best_eval_loss"] for r in rows if r["best_eval_loss"] is not None]
        reached = [r["best_any_eval_loss"] for r in rows if r.get("best_any_eval_loss") is not None]
        gains = [r["gain"] for r in rows if r["gain"] is not None]
        table[method] = {
            "seeds": len(rows),
            "best_eval_loss_mean": statistics.fmean(losses) if losses else None,
            "best_eval_loss_sd": statistics.stdev(losses) if len(losses) > 1 else 0.0,
            "best_eval_loss_min_max": [min(losses), max(losses)] if losses else None,
            "best_any_eval_loss_mean": _mean(reached),
            "best_any_eval_loss_sd": statistics.stdev(reached) if len(reached) > 1 else 0.0,
            "feasible_trials_mean": _mean([r["feasible"] for r in rows if r.get("feasible") is not None]),
            "decisions": {d: sum(r["decision"] == d for r in rows) for d in DECISIONS},
            "gain_mean": statistics.fmean(gains) if gains else None,
            "gain_sd": statistics.stdev(gains) if len(gains) > 1 else 0.0,
            "steps_mean": statistics.fmean(r["steps"] for r in rows),
            "trials_mean": statistics.fmean(r["trials"] for r in rows),
            "search_seconds_mean": statistics.fmean(r["search_seconds"] for r in rows),
            "run_seconds_mean": statistics.fmean(r["run_seconds"] for r in rows),
            "run_cpu_seconds_mean": statistics.fmean(r["run_cpu_seconds"] for r in rows),
            "overhead_per_trial_vs_optuna_s": _mean(extra.get(method)),
            "cpu_overhead_per_trial_vs_optuna_s": _mean(cpu_extra.get(method)),
            "trials_that_copied_mean": statistics.fmean(r["copied"] for r in rows),
        }
    return table


def _mean(values: list[float] | None) -> float | None:
    return statistics.fmean(values) if values else None


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pm(mean: float | None, sd: float, digits: int = 3) -> str:
    return "-" if mean is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def show(table: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| method | winner's eval_loss (mean ± sd) | lowest eval_loss reached, any trial | feasible trials "
        "| gate promote/reject/inconclusive/no winner | gain (mean ± sd) "
        "| steps | trials "
        "| search s | run s | run CPU s | Ray overhead per trial vs Optuna: wall s, CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, t in table.items():
        d = t["decisions"]
        over, cpu = t["overhead_per_trial_vs_optuna_s"], t["cpu_overhead_per_trial_vs_optuna_s"]
        lines.append(
            f"| {method} | {_pm(t['best_eval_loss_mean'], t['best_eval_loss_sd'], 4)} "
            f"| {_pm(t.get('best_any_eval_loss_mean'), t.get('best_any_eval_loss_sd', 0.0), 4)} "
            f"| {_num(t.get('feasible_trials_mean'), '.1f')} "
            f"| {d['promote']}/{d['reject']}/{d['inconclusive']}/{d['no winner']} "
            f"| {_pm(t['gain_mean'], t['gain_sd'])} "
            f"| {t['steps_mean']:.0f} | {t['trials_mean']:.1f} | {t['search_seconds_mean']:.0f} "
            f"| {t['run_seconds_mean']:.0f} | {t['run_cpu_seconds_mean']:.0f} "
            f"| {_num(over, '+.1f')}, {_num(cpu, '+.1f')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--population", type=int, default=4, help="PBT's population (n_trials)")
    parser.add_argument("--trials", type=int, default=5, help="ASHA's and the Optuna defaults' n_trials")
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="one seed, 2 trials of 20 steps: a smoke run")
    parser.add_argument("--rescan", type=Path, help="the run folders of a run: re-read them into its results file")
    args = parser.parse_args()
    if args.rescan:
        rescan(args.rescan, "ray_vs_optuna_quick.json" if args.quick else "ray_vs_optuna.json")
        return
    if args.quick:
        args.seeds, args.population, args.trials, args.max_steps, args.eval_every = 1, 2, 2, 20, 5
    adopt_orphans()
    core = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {core})  # one core for this process, its workers and the local Ray it starts
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="ray-vs-optuna-"))  # kept: each run's outputs, to look into
    print(f"run folders in {scratch}", flush=True)
    for seed in range(args.seeds):
        for method in METHODS:
            runs.append(one_run(method, seed, args, scratch))
            print(json.dumps(runs[-1]), flush=True)
        write(args, runs, time.perf_counter() - started, done=seed + 1 == args.seeds)  # a cut run keeps its seeds
    print(show(summarize(runs)))


def write(args: argparse.Namespace, runs: list[dict[str, Any]], seconds: float, done: bool) -> None:
    settings = {k: getattr(args, k) for k in ("seeds", "population", "trials", "max_steps", "eval_every", "quick")}
    cfg = method_config("optuna", 0, args, Path("unused"))
    result = {
        "settings": {**settings, "cores": 1, "torch_threads": 1, "task": "examples/quickstart/hpo.yaml"},
        "manifest": {**pins(cfg, threads=1), "ray": version("ray"), "wall_seconds": round(seconds), "complete": done},
        "summary": summarize(runs),
        "runs": runs,
    }
    name = "ray_vs_optuna_quick.json" if args.quick else "ray_vs_optuna.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote benchmarks/results/{name}", flush=True)


if __name__ == "__main__":
    main()
