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

    OMP_NUM_THREADS=1 python benchmarks/curves.py --task quickstart   # how the committed table was built

Writes benchmarks/results/curves_<task>.parquet and curves_<task>.json (the manifest: the pins of
benchmarks/table_manifest.py (commit, demo model hash, data fingerprint, threads, library versions, the config),
the grid, the machine, the wall time). Progress is kept in curves_<task>.partial.jsonl until the table is complete.
The replay refuses a table whose pins differ from the code under test; tests/test_curve_tables.py retrains rows of
the committed table and compares them with the recorded curves.
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


def run_one(runner: Any, cfg: Any, params: dict[str, Any], seed: int, stop_at: int | None = None) -> dict[str, Any]:
    """One training run of the table: the whole curve (also when it diverges), steps and seconds. With `stop_at`
    (the drift test) the run stops at that step the way a pruned trial stops."""
    from hpo_action.search.space import trial_defaults
    from hpo_action.train.trial import Pruned, TrialError

    curve: list[tuple[int, float]] = []

    def record(value: float, step: int) -> bool:
        curve.append((step, value))
        return stop_at is not None and step >= stop_at  # the table itself is never pruned: every curve in full

    runner.cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
    started = time.perf_counter()
    error = None
    try:
        result = runner.run({**trial_defaults(cfg), **params}, report=record)
        steps = result.steps
        forgetting = result.forgetting
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
    partial: Path, todo: list[tuple[int, dict[str, Any]]], runner: Any, cfg: Any, task: Task
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
            row = run_one(runner, cfg, params, seed)
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
    args = parser.parse_args()
    for name in TASKS if args.task == "all" else [args.task]:
        if args.add_seeds:
            add_seeds(TASKS[name], args.add_seeds, args.top, args.limit, args.reverse)
        else:
            build(TASKS[name], args.limit, args.only_seed, args.reverse, args.shuffle)


if __name__ == "__main__":
    main()
