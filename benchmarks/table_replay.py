"""Replay a search strategy against a learning-curve table (benchmarks/curves.py): the study code is hpo-action's
own (`open_study`: sampler, pruner, warm start, seeding; `run_trials`: the slot lock, the duplicate check, the
loop), and only the trial execution is replaced by a lookup. `TableRunner.run` maps the suggested parameters to
the nearest grid point (log distance for the learning rate), reports the recorded curve of one training seed
step by step to the real pruner, and returns the recorded final loss; a diverged curve fails the trial as the
real one did. The storage is Optuna's in-memory one (thousands of studies; nothing else changes).

Each replay yields the incumbent after every trial (the product's choice: the best completed trial so far), its
*true* loss (the mean over the table's training seeds) and the training steps spent so far.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


@dataclass
class Table:
    """One task's table: rows keyed by (grid point, training seed), each configuration's true loss."""

    task: str
    grid: dict[str, list[Any]]
    seeds: list[int]
    rows: dict[tuple[Any, ...], dict[str, Any]]
    config: dict[str, Any]

    @classmethod
    def load(cls, task: str, folder: Path = RESULTS) -> Table:
        import pyarrow.parquet as pq

        manifest = json.loads((folder / f"curves_{task}.json").read_text())
        grid = manifest["grid"]
        rows = {}
        for row in pq.read_table(folder / f"curves_{task}.parquet").to_pylist():
            rows[(*(row[k] for k in grid), row["train_seed"])] = row
        return cls(task, grid, manifest["training_seeds"], rows, manifest["config"])

    def points(self) -> list[tuple[Any, ...]]:
        return sorted({key[:-1] for key in self.rows}, key=str)

    def worst_final(self) -> float:
        """What a diverged run counts as in a true loss: the worst finite final loss of the table."""
        return max(r["final"] for r in self.rows.values() if math.isfinite(r["final"] or math.nan))

    def true_losses(self) -> dict[tuple[Any, ...], float]:
        """Each grid point's mean final loss over the training seeds (the truth a strategy is scored by)."""
        worst = self.worst_final()
        return {p: statistics.fmean(self._final(p, s, worst) for s in self.seeds) for p in self.points()}

    def seed_sd(self, point: tuple[Any, ...]) -> float:
        worst = self.worst_final()
        return statistics.stdev(self._final(point, s, worst) for s in self.seeds)

    def _final(self, point: tuple[Any, ...], seed: int, worst: float) -> float:
        final = self.rows[(*point, seed)]["final"]
        return final if final is not None and math.isfinite(final) else worst

    def nearest(self, params: dict[str, Any]) -> tuple[Any, ...]:
        """The grid point closest to the suggestion, dimension by dimension (log scale for positive ranges)."""
        point = []
        for name, values in self.grid.items():
            value = params[name]
            if isinstance(values[0], str) or isinstance(value, str):
                point.append(value if value in values else values[0])
                continue
            scale = math.log if name == "learning_rate" and value > 0 else float
            distances = [abs(scale(v) - scale(value)) for v in values]
            point.append(values[distances.index(min(distances))])
        return tuple(point)


@dataclass
class Step:
    """One trial of a replay: the grid point, the steps it spent, its observed final loss (None unless complete)."""

    point: tuple[Any, ...]
    steps: int
    observed: float | None


class TableRunner:
    """Stands in for `TrialRunner`: same call, the table's recorded curve instead of training."""

    def __init__(self, table: Table, train_seed: int, metric: str = "eval_loss", eval_every: int = 0) -> None:
        self.table, self.train_seed, self.metric = table, train_seed, metric
        self.eval_every = eval_every  # report only these steps (a sparser cadence than the table's); 0: all
        self.log: list[Step] = []

    def run(
        self,
        params: dict[str, Any],
        report: Callable[[float, int], bool] | None = None,
        save_to: Callable[[Any], Path | None] | None = None,
        trial_number: int | None = None,
    ) -> Any:
        from hpo_action.errors import TrialError
        from hpo_action.train.trial import Pruned, TrialResult

        point = self.table.nearest(params)
        row = self.table.rows[(*point, self.train_seed)]
        curve = [
            (step, value)
            for step, value in zip(row["steps"], row["values"], strict=True)
            if not self.eval_every or step % self.eval_every == 0 or step == row["steps"][-1]
        ]
        for step, value in curve:
            if report is not None and report(value, step):
                self.log.append(Step(point, step, None))
                raise Pruned(step, value)
        if row["status"] != "ok":
            self.log.append(Step(point, row["run_steps"], None))
            raise TrialError(row["error"] or "diverged")
        self.log.append(Step(point, row["run_steps"], row["final"]))
        result = TrialResult(
            value=row["final"],
            metrics={self.metric: row["final"]},
            curve=curve,
            steps=row["run_steps"],
            seconds=row["run_steps"] * row["seconds_per_step"],
        )
        if save_to is not None:
            save_to(result)  # the product decides whether it would keep the weights; nothing is written
        return result


@dataclass
class Replay:
    """The incumbent after every trial of one replayed study: cumulative steps and its true regret."""

    steps: list[int]
    regret: list[float]
    trials: int

    def total_steps(self) -> int:
        return self.steps[-1] if self.steps else 0

    def final_regret(self) -> float:
        return self.regret[-1] if self.regret else math.inf

    def regret_at(self, budget: float) -> float:
        """The incumbent's true regret once `budget` steps are spent (the last trial that ended within it)."""
        value = math.inf
        for steps, regret in zip(self.steps, self.regret, strict=True):
            if steps > budget:
                break
            value = regret
        return value

    def steps_to(self, epsilon: float) -> float:
        """Steps spent when the incumbent's true regret first reaches ≤ epsilon; inf when it never does."""
        return next((s for s, r in zip(self.steps, self.regret, strict=True) if r <= epsilon), math.inf)


def replay(
    table: Table,
    cfg: Any,
    study_seed: int,
    train_seed: int,
    truth: dict[tuple[Any, ...], float],
    stop: Callable[[Any], bool] | None = None,
) -> Replay:
    """One study of `cfg` against the table, through the product's `open_study` and `run_trials`."""
    import optuna

    from hpo_action.search import study as study_module

    runner = TableRunner(table, train_seed, cfg.search.objective.metric, cfg.search.budget.eval_every)
    best = min(truth.values())
    with tempfile.TemporaryDirectory(prefix="hpo-replay-") as folder:
        cfg = cfg.model_copy(
            update={
                "search": cfg.search.model_copy(update={"seed": study_seed, "storage": None, "study_name": "replay"}),
                "output": cfg.output.model_copy(update={"dir": folder}),
            }
        )
        real_open = study_module.open_storage
        study_module.open_storage = lambda url, search=None: optuna.storages.InMemoryStorage()
        try:
            study = study_module.open_study(cfg)
        finally:
            study_module.open_storage = real_open
        if stop is None:
            study_module.run_trials(study, cfg, runner, target=cfg.search.n_trials, prune_adapters=False)
        else:  # a stopping rule between trials: the loop asked for one trial at a time
            for count in range(1, cfg.search.n_trials + 1):
                study_module.run_trials(study, cfg, runner, target=count, prune_adapters=False)
                if stop(study):
                    break
    return incumbents(runner.log, truth, best)


def incumbents(log: list[Step], truth: dict[tuple[Any, ...], float], best: float) -> Replay:
    """After each trial: steps so far, and the true regret of the best completed trial so far (ties: first)."""
    spent, chosen, observed = 0, None, math.inf
    steps, regrets = [], []
    for step in log:
        spent += step.steps
        if step.observed is not None and step.observed < observed:
            chosen, observed = step.point, step.observed
        steps.append(spent)
        regrets.append(truth[chosen] - best if chosen is not None else math.inf)
    return Replay(steps, regrets, len(log))
