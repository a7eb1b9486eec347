"""Tabular learning-curve benchmark: train every configuration of a grid, for several training seeds, with
hpo-action's own trial loop (one loaded model, one tokenized dataset, `TrialRunner.run`), and record the whole
validation curve at every `eval_every` step plus the seconds per step.

The table lets `benchmarks/hpo_efficiency.py` replay any search strategy thousands of times in seconds and score
it by the *true* quality of the configuration it picks (the mean over training seeds, not the one noisy run it
saw). Two tasks:

    quickstart  the quickstart (LoRA on the letter-shift task): LR × rank × alpha, a sharp optimum at a cliff
    flat        the same data with cosine decay and warmup searched: LR × rank × warmup × scheduler, where
                warmup and decay make high learning rates usable, so the optimum is flatter

    python benchmarks/curves.py --task quickstart      # resumable: rerun the same command after an interruption
    python benchmarks/curves.py --task all
    python benchmarks/curves.py --task quickstart --add-seeds 8 --top 20   # the best 20 to 8 training seeds
    python benchmarks/curves.py --task quickstart --probes   # the probe readings at every evaluation (side file)

    OMP_NUM_THREADS=1 python benchmarks/curves.py --task quickstart   # how the committed table was built

Writes benchmarks/results/curves_<task>.parquet and curves_<task>.json (the manifest: the pins of
benchmarks/table_manifest.py (commit, demo model hash, data fingerprint, threads, library versions, the config),
the grid, the machine, the wall time). Progress is kept in curves_<task>.partial.jsonl until the table is complete.
The replay refuses a table whose pins differ from the code under test; tests/test_curve_tables.py retrains rows of
the committed table and compares them with the recorded curves.

`--probes` retrains the rows the replay uses (every configuration on the table's base training seeds) with the same
runner and records, at each evaluation, what the product's forgetting rung checks would read there
(`TrialRunner.probe_now`: each forgetting set's drop and constraint value; search/optuna_backend/forgetting_rungs.py),
in a side file, curves_<task>_probes.parquet and .json (the same pins), so the replay can model those checks
without rewriting the table. Each retrained curve is compared with the recorded one (DRIFT_TOLERANCE): the count
that match is drift evidence too. Resumable and shareable like the build (curves_<task>_probes.partial.jsonl).
The side file also records the base model's value of the objective (`base_objective`, measured as the product's
no-learning stop measures it: search/optuna_backend/no_learning.py), so the replay applies that stop too;
`--base` measures it again into an existing side file.

    python benchmarks/curves.py --task flat --base
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from table_manifest import commit, pins

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
QUICKSTART = ROOT / "examples" / "quickstart" / "hpo.yaml"
TRAINING_SEEDS = (0, 1, 2)  # every configuration; `--add-seeds` gives the best ones more (manifest: extra_seeds)
DRIFT_TOLERANCE = 0.02  # relative, on eval_loss: room for another CPU's float rounding only (the drift test's)


def log_grid(low: float, high: float, points: int) -> list[float]:
    """`points` log-spaced values from low to high, rounded to 3 significant digits."""
    ratio = math.log(high / low) / (points - 1)
    return [float(f"{low * math.exp(i * ratio):.3g}") for i in range(points)]


@dataclass(frozen=True)
class Task:
    """A task of the table: the config's overrides and the grid of searched parameters."""

    name: str
    overrides: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: tuple[int, ...] = TRAINING_SEEDS  # the training seeds every configuration is trained with

    def configurations(self) -> list[dict[str, Any]]:
        names = list(self.grid)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.grid.values())]


TASKS = {
    "quickstart": Task(
        "quickstart",
        {},
        {
            "learning_rate": log_grid(3e-3, 3e-2, 3),
            "lora_r": [8, 16],
            "replay_ratio": [0.3, 0.5],
            "kl_to_base": [0.2, 1.0],
        },
    ),
    "flat": Task(
        "flat",
        {
            "train.lr_scheduler_type": "cosine",
            "search.space": {
                "learning_rate": {"low": 1e-4, "high": 1e-1, "log": True},
                "lora_r": {"choices": [2, 8, 32]},
                "warmup_ratio": {"choices": [0.0, 0.2]},
                "lr_scheduler_type": {"choices": ["constant_with_warmup", "cosine"]},
                # the remedies fixed at the warm start's values (config/remedies.py REMEDY_STARTS): the table is
                # replayable under the forgetting constraint (at 0, as before, no row was feasible) without a
                # replay × KL grid on top of the 60 configurations
                "replay_ratio": 0.25,
                "kl_to_base": 1.0,
            },
        },
        {
            # 5 learning rates (10 before issue 23's rebuild): 180 rows fit a 20-minute build on one thread
            "learning_rate": log_grid(1e-4, 1e-1, 5),
            "lora_r": [2, 8, 32],
            "warmup_ratio": [0.0, 0.2],
            "lr_scheduler_type": ["constant_with_warmup", "cosine"],
        },
        # 2 training seeds, not 3: issue 23's rebuild ran on a machine shared by six sessions (load 11-15 on 2
        # cores), where 180 rows did not fit the time given; ε is pooled over 15 configurations (15 df)
        seeds=(0, 1),
    ),
}


def task_config(task: Task) -> Any:
    """The quickstart config with the task's overrides; the space of the task is what strategies search."""
    from hpo_action.config import apply_overrides, load_config

    cfg = load_config(QUICKSTART)
    return apply_overrides(cfg, task.overrides, source=f"curves:{task.name}") if task.overrides else cfg


def session_runner(cfg: Any) -> Any:
    """The product's trial runner for `cfg` (replay rows, forgetting probes, KL reference), its files in a scratch
    folder."""
    from rich.console import Console

    from hpo_action.data.loading import load_splits
    from hpo_action.session import quiet_libraries, trial_runner

    quiet_libraries()
    folder = Path(tempfile.mkdtemp(prefix="hpo-curves-"))
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"dir": str(folder)})})
    return trial_runner(cfg, load_splits(cfg.data), None, Console(quiet=True))


def run_one(
    runner: Any, cfg: Any, params: dict[str, Any], seed: int, stop_at: int | None = None, probes: bool = False
) -> dict[str, Any]:
    """One training run of the table: the whole curve (also when it diverges), steps and seconds. With `stop_at`
    (the drift test) the run stops at that step the way a pruned trial stops. With `probes`, the row also holds
    the forgetting probes read at each evaluation before the last (`runner.probe_now`, where the product's rung
    checks read them) and at the end (the trial's own end-of-trial probe): [[step, {set: [drop, excess]}], ...]."""
    from hpo_action.search.space import trial_defaults
    from hpo_action.train.trial import Pruned, TrialError

    curve: list[tuple[int, float]] = []
    readings: list[list[Any]] = []
    max_steps = cfg.search.budget.max_steps

    def record(value: float, step: int) -> bool:
        curve.append((step, value))
        if probes and step < max_steps:
            readings.append([step, {name: [r.drop, r.excess] for name, r in runner.probe_now().items()}])
        return stop_at is not None and step >= stop_at  # the table itself is never pruned: every curve in full

    runner.cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
    started = time.perf_counter()
    error = None
    try:
        result = runner.run({**trial_defaults(cfg), **params}, report=record)
        steps = result.steps
        forgetting = result.forgetting
        if probes:
            ends = {name: [result.forgetting_drop[name], excess] for name, excess in result.forgetting.items()}
            readings.append([steps, ends])
    except TrialError as err:  # diverged (non-finite loss): the curve so far, and where it stopped
        error = str(err)[:200]
        steps = (curve[-1][0] if curve else 0) + cfg.search.budget.eval_every
        forgetting = {}
    except Pruned as pruned:
        error, steps, forgetting = "stopped", pruned.step, {}
    seconds = time.perf_counter() - started
    return {
        **params,
        "train_seed": seed,
        "steps": [s for s, _ in curve],
        "values": [v for _, v in curve],
        "final": curve[-1][1] if curve and error is None else math.nan,
        "status": "ok" if error is None else "stopped" if error == "stopped" else "fail",
        "error": error,
        "forgetting": json.dumps(forgetting),  # per probe set: the constraint value (> 0: beyond the margin)
        "run_steps": steps,
        "seconds": round(seconds, 3),
        "seconds_per_step": round(seconds / max(steps, 1), 5),
        **({"probes": json.dumps(readings)} if probes else {}),
    }


def build(
    task: Task, limit: int | None = None, only_seeds: list[int] | None = None, reverse: bool = False, shuffle: int = 0
) -> Path:
    """Train the missing rows of the table (resuming from the partial file), then write parquet + manifest.
    `only_seeds`: train only these training seeds now; `reverse`: from the last row. Several processes may share
    the partial file: each skips a row another one has written meanwhile."""
    cfg = task_config(task)
    partial = RESULTS / f"curves_{task.name}.partial.jsonl"
    rows = [json.loads(line) for line in partial.read_text().splitlines()] if partial.is_file() else []
    rows = [row for row in rows if row["train_seed"] in task.seeds]
    done = {_key(row, task) for row in rows}
    todo = [
        (seed, config)
        for seed in task.seeds
        if only_seeds is None or seed in only_seeds
        for config in task.configurations()
        if _key({**config, "train_seed": seed}, task) not in done
    ]
    print(f"{task.name}: {len(done)} rows done, {len(todo)} to train", flush=True)
    started = time.monotonic()
    runner = session_runner(cfg)
    todo = todo[::-1] if reverse else todo
    if shuffle:  # a third process: a random order, so that it seldom meets the forward and the reverse one
        import random

        random.Random(shuffle).shuffle(todo)
    for seed, params, row in _train_missing(partial, todo[:limit] if limit else todo, runner, cfg, task):
        rows.append(row)
        final, seconds = row["final"], row["seconds"]
        print(f"{task.name} {len(rows)}: {params} seed {seed}: {final:.4f} in {seconds:.1f} s", flush=True)
    if not partial.is_file():  # another process finished the table (and removed the partial file)
        return RESULTS / f"curves_{task.name}.parquet"
    wall = time.monotonic() - started
    # the partial file again: another process (--only-seed) may have added rows; one row per key
    rows = [json.loads(line) for line in partial.read_text().splitlines()] if partial.is_file() else rows
    rows = list({_key(row, task): row for row in rows if row["train_seed"] in task.seeds}.values())
    if len(rows) < len(task.configurations()) * len(task.seeds):
        print(f"{task.name}: {len(rows)} rows so far; run again to continue")
        return partial
    return write_table(task, cfg, rows, wall)


def _train_missing(
    partial: Path, todo: list[tuple[int, dict[str, Any]]], runner: Any, cfg: Any, task: Task, probes: bool = False
) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
    """Train each (seed, params) of `todo` and append its row to the partial file as it is done. The file may be
    shared: a row another process has written meanwhile is skipped, and once another process has finished the
    table (and removed the file) nothing more is trained."""
    with partial.open("a") as sink:
        for seed, params in todo:
            if not partial.is_file():
                return
            if _key({**params, "train_seed": seed}, task) in _written(partial, task):
                continue
            row = run_one(runner, cfg, params, seed, probes=probes)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            yield seed, params, row


def write_table(
    task: Task, cfg: Any, rows: list[dict[str, Any]], wall: float, extra: dict[str, Any] | None = None
) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda r: (r["train_seed"], *(str(r[k]) for k in task.grid)))
    table = pa.Table.from_pylist(rows)
    path = RESULTS / f"curves_{task.name}.parquet"
    pq.write_table(table, path, compression="zstd")
    manifest = {
        "task": task.name,
        "grid": task.grid,
        "training_seeds": list(task.seeds),
        **({"extra_seeds": extra} if extra else {}),
        "configurations": len(task.configurations()),
        "rows": len(rows),
        **pins(cfg, _torch_threads()),
        "machine": _machine(),
        "train_seconds_total": round(sum(r["seconds"] for r in rows), 1),
        "wall_s_last_session": round(wall, 1),
    }
    (RESULTS / f"curves_{task.name}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (RESULTS / f"curves_{task.name}.partial.jsonl").unlink(missing_ok=True)
    print(f"wrote {path} ({path.stat().st_size} bytes) and its manifest")
    return path


def add_seeds(task: Task, total: int, top: int, limit: int | None = None, reverse: bool = False) -> Path:
    """Give the `top` configurations of the complete table (by mean final loss over the task's training seeds, a
    diverged run counting as the worst finite one) training seeds up to `total` in all, with the same runner;
    resumable like `build`, and shared like it (`reverse`: a second process from the last row). Refused unless
    the table's pins match the code here, so old and new rows describe one trial loop."""
    import pyarrow.parquet as pq
    from table_manifest import check, demo_model_sha256

    cfg = task_config(task)
    path = RESULTS / f"curves_{task.name}.json"
    manifest = json.loads(path.read_text())
    check(manifest, path.name, cfg)
    if manifest.get("demo_model_sha256") != demo_model_sha256():
        raise SystemExit(f"error: {path.name}: the demo model here differs from the table's; rebuild the table")
    rows = pq.read_table(RESULTS / f"curves_{task.name}.parquet").to_pylist()
    chosen = _best(task, rows, top)
    seeds = list(range(len(task.seeds), total))
    partial = RESULTS / f"curves_{task.name}.partial.jsonl"
    trained = [json.loads(line) for line in partial.read_text().splitlines()] if partial.is_file() else []
    rows += [row for row in trained if row["train_seed"] in seeds]  # a run stopped early for a smaller total
    done = {_key(row, task) for row in rows}
    todo = [(s, c) for s in seeds for c in chosen if _key({**c, "train_seed": s}, task) not in done]
    print(f"{task.name}: top {top} to {total} seeds, {len(todo)} rows to train", flush=True)
    started = time.monotonic()
    runner = session_runner(cfg) if todo else None
    todo = todo[::-1] if reverse else todo
    for seed, params, row in _train_missing(partial, todo[:limit] if limit else todo, runner, cfg, task):
        print(f"{task.name} extra: {params} seed {seed}: {row['final']:.4f} in {row['seconds']:.1f} s", flush=True)
    if not partial.is_file():  # another process finished the table (and removed the partial file)
        return RESULTS / f"curves_{task.name}.parquet"
    trained = [json.loads(line) for line in partial.read_text().splitlines()] if partial.is_file() else []
    rows = list({_key(row, task): row for row in rows + [r for r in trained if r["train_seed"] in seeds]}.values())
    missing = len(chosen) * len(seeds) - sum(row["train_seed"] in seeds for row in rows)
    if missing:
        print(f"{task.name}: {missing} rows to go; run again to continue")
        return partial
    extra = {
        "seeds": seeds,
        "configurations": [[c[k] for k in task.grid] for c in chosen],
        "rule": f"the {top} configurations with the lowest mean final loss over training_seeds",
        "commit": commit()["commit"],
        "base_commit": manifest.get("extra_seeds", {}).get("base_commit", manifest.get("commit")),
    }
    return write_table(task, cfg, rows, time.monotonic() - started, extra)


def build_probes(task: Task, limit: int | None = None, reverse: bool = False) -> Path:
    """Retrain the rows the replay uses (every configuration on the table's base training seeds) reading the
    probes at each evaluation (`run_one(probes=True)`), then write curves_<task>_probes.parquet and its manifest.
    Refused unless the table's pins match the code here; resumable, and shared by two processes (`reverse`)."""
    from table_manifest import check, demo_model_sha256

    cfg = task_config(task)
    path = RESULTS / f"curves_{task.name}.json"
    manifest = json.loads(path.read_text())
    check(manifest, path.name, cfg)
    if manifest.get("demo_model_sha256") != demo_model_sha256():
        raise SystemExit(f"error: {path.name}: the demo model here differs from the table's; rebuild the table")
    partial = RESULTS / f"curves_{task.name}_probes.partial.jsonl"
    written = RESULTS / f"curves_{task.name}_probes.parquet"
    if written.is_file() and not partial.is_file():
        print(f"{task.name} probes: {written.name} is complete; delete it to rebuild")
        return written
    partial.touch()
    done = _written(partial, task)
    todo = [
        (seed, config)
        for seed in task.seeds
        for config in task.configurations()
        if _key({**config, "train_seed": seed}, task) not in done
    ]
    print(f"{task.name} probes: {len(done)} rows done, {len(todo)} to train", flush=True)
    started = time.monotonic()
    runner = session_runner(cfg) if todo else None
    todo = todo[::-1] if reverse else todo
    for seed, params, row in _train_missing(partial, todo[:limit] if limit else todo, runner, cfg, task, True):
        print(f"{task.name} probes: {params} seed {seed}: {row['final']:.4f} in {row['seconds']:.1f} s", flush=True)
    if not partial.is_file():  # another process finished the side file (and removed the partial file)
        return RESULTS / f"curves_{task.name}_probes.parquet"
    rows = list({_key(r, task): r for r in map(json.loads, partial.read_text().splitlines())}.values())
    if len(rows) < len(task.configurations()) * len(task.seeds):
        print(f"{task.name} probes: {len(rows)} rows so far; run again to continue")
        return partial
    return write_probes(task, cfg, rows, manifest, time.monotonic() - started)


def curve_matches(recorded: dict[str, Any], now: dict[str, Any], tolerance: float = DRIFT_TOLERANCE) -> float:
    """The largest relative difference between two runs' eval curves (inf when their evaluation steps differ)."""
    if list(recorded["steps"]) != list(now["steps"]):
        return math.inf
    pairs = zip(recorded["values"], now["values"], strict=True)
    return max((abs(b - a) / abs(a) for a, b in pairs), default=0.0)


def write_probes(task: Task, cfg: Any, rows: list[dict[str, Any]], table: dict[str, Any], wall: float) -> Path:
    """The probe side file: each row's readings, its retrained curve and how far that curve is from the table's."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    recorded = {_key(r, task): r for r in pq.read_table(RESULTS / f"curves_{task.name}.parquet").to_pylist()}
    for row in rows:
        row["max_rel_diff"] = curve_matches(recorded[_key(row, task)], row)
        row["matches"] = row["max_rel_diff"] <= DRIFT_TOLERANCE
    rows = sorted(rows, key=lambda r: (r["train_seed"], *(str(r[k]) for k in task.grid)))
    keep = [*task.grid, "train_seed", "steps", "values", "status", "run_steps", "probes", "max_rel_diff", "matches"]
    path = RESULTS / f"curves_{task.name}_probes.parquet"
    pq.write_table(pa.Table.from_pylist([{k: r[k] for k in keep} for r in rows]), path, compression="zstd")
    matched = sum(r["matches"] for r in rows)
    exact = sum(r["max_rel_diff"] == 0 for r in rows)
    manifest = {
        "task": task.name,
        "of_table": {"commit": table.get("commit"), "rows": len(rows), "training_seeds": list(task.seeds)},
        "readings": "[[step, {set: [drop, excess]}]] at each evaluation before the last (TrialRunner.probe_now) "
        "and at the end (the trial's own probe)",
        "curves_match": {"tolerance_rel": DRIFT_TOLERANCE, "matched": matched, "bit_identical": exact},
        **pins(cfg, _torch_threads()),
        "machine": _machine(),
        "train_seconds_total": round(sum(r["seconds"] for r in rows), 1),
        "wall_s_last_session": round(wall, 1),
        "base_objective": base_objective(cfg),
    }
    (RESULTS / f"curves_{task.name}_probes.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (RESULTS / f"curves_{task.name}_probes.partial.jsonl").unlink(missing_ok=True)
    print(f"wrote {path}: {matched}/{len(rows)} curves match the table within {DRIFT_TOLERANCE} ({exact} exactly)")
    return path


def base_objective(cfg: Any) -> dict[str, Any]:
    """The base model's value of the objective, as the product's no-learning stop measures it, with the commit it
    was measured at."""
    from hpo_action.search.optuna_backend.no_learning import base_params

    metric = cfg.search.objective.metric
    value = session_runner(cfg).base_metrics(base_params(cfg))[metric]
    return {"metric": metric, "value": value, "commit": commit()["commit"]}


def record_base(task: Task) -> Path:
    """`base_objective` measured now into the task's existing probe side file (its other fields unchanged)."""
    path = RESULTS / f"curves_{task.name}_probes.json"
    manifest = json.loads(path.read_text())
    manifest["base_objective"] = base_objective(task_config(task))
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{task.name}: base {manifest['base_objective']['metric']} {manifest['base_objective']['value']:.6g}")
    return path


def _best(task: Task, rows: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    finite = [r["final"] for r in rows if r["final"] is not None and math.isfinite(r["final"])]
    worst = max(finite)
    by_config: dict[tuple[Any, ...], list[float]] = {}
    for row in rows:
        if row["train_seed"] in task.seeds:
            final = row["final"] if row["final"] is not None and math.isfinite(row["final"]) else worst
            by_config.setdefault(tuple(row[k] for k in task.grid), []).append(final)
    ranked = sorted(by_config, key=lambda point: sum(by_config[point]) / len(by_config[point]))
    return [dict(zip(task.grid, point, strict=True)) for point in ranked[:top]]


def _written(partial: Path, task: Task) -> set[tuple[Any, ...]]:
    return {_key(json.loads(line), task) for line in partial.read_text().splitlines()} if partial.is_file() else set()


def _key(row: dict[str, Any], task: Task) -> tuple[Any, ...]:
    return (row["train_seed"], *(row[k] for k in task.grid))


def _machine() -> dict[str, Any]:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
    }


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=[*TASKS, "all"], default="all")
    parser.add_argument("--limit", type=int, help="Train at most this many rows now (timing probes).")
    parser.add_argument("--add-seeds", type=int, metavar="N", help="Give the --top configurations N seeds in all.")
    parser.add_argument("--top", type=int, default=20, help="How many of the best configurations --add-seeds covers.")
    parser.add_argument("--only-seed", type=int, action="append", help="Train only this training seed now.")
    parser.add_argument("--reverse", action="store_true", help="Train from the last missing row (a 2nd process).")
    parser.add_argument("--shuffle", type=int, default=0, help="Train the missing rows in a seeded random order.")
    parser.add_argument("--probes", action="store_true", help="Record the probes at every evaluation (side file).")
    parser.add_argument("--base", action="store_true", help="Measure the base model's objective into the side file.")
    args = parser.parse_args()
    for name in TASKS if args.task == "all" else [args.task]:
        if args.base:
            record_base(TASKS[name])
        elif args.probes:
            build_probes(TASKS[name], args.limit, args.reverse)
        elif args.add_seeds:
            add_seeds(TASKS[name], args.add_seeds, args.top, args.limit, args.reverse)
        else:
            build(TASKS[name], args.limit, args.only_seed, args.reverse, args.shuffle)


if __name__ == "__main__":
    main()
