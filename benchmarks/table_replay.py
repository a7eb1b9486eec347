"""Replay a search strategy against a learning-curve table (benchmarks/curves.py): the study code is hpo-action's
own (`open_study`: sampler, pruner, warm start, seeding; `run_trials`: the slot lock, the duplicate check, the
loop, the forgetting constraint), and only the trial execution is replaced by a lookup. `TableRunner.run` maps the
suggested parameters to the nearest grid point (log distance for the learning rate), reports the recorded curve of
one training seed step by step to the real pruner, and returns the recorded final loss and forgetting readings; a
diverged curve fails the trial as the real one did. The storage is Optuna's in-memory one (thousands of studies).

As in a real run: each study has its own name in the product's pattern (Hyperband assigns brackets by hashing the
study name with the trial number, so one shared name would give every replay the same bracket sequence), a trial
is never pruned at its last evaluation (`_Tracker.record`: a finished trial is complete), and the incumbent is the
trial the product would hand to the gate (`chosen_trial`: the best feasible completed trial).

Under search.forgetting_constraint the product's forgetting rung checks run as in a real trial
(search/optuna_backend/forgetting_rungs.py: wherever the pruner proposes a stop, the probes are read; a trial within
every margin is spared, one beyond a margin is stopped and counted infeasible): `TableRunner.probe_now` hands the
product's own `ForgettingRungs` the readings recorded for that row at that step (curves.py --probes:
curves_<task>_probes.parquet) in place of a live probe. A table without that side file is refused under the
constraint unless the caller asks to replay the pruner without the checks (`--no-rung-checks`, labelled so). The
oracle pruner knows each trial's end, so it needs no rung checks.

With the probe side file, the product's no-learning stop (search/stopping.py) runs too: `MeasuredTableRunner`
knows the base model's value (the side file's `base_objective`) and hands each complete trial the recorded drop and
bound of its own final probe, so a replayed study stops where a real one would. The oracle is left without it.

Each replay yields the incumbent after every trial, its *true* loss (the mean over every training seed the table has
for it: the best configurations have extra seeds) and the training steps spent so far. A table whose manifest does
not match the code under test is refused (benchmarks/table_manifest.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
NO_RUNG_CHECKS = "HPO_REPLAY_NO_RUNG_CHECKS"  # set by --no-rung-checks, read in every worker process

Readings = dict[int, dict[str, tuple[float, float]]]  # step → forgetting set → (drop, excess), one row's probes


@dataclass
class Table:
    """One task's table: rows keyed by (grid point, training seed), each configuration's true loss."""

    task: str
    grid: dict[str, list[Any]]
    seeds: list[int]
    rows: dict[tuple[Any, ...], dict[str, Any]]
    config: dict[str, Any]
    probes: dict[tuple[Any, ...], Readings] | None = None  # key as rows → the probes at each evaluation
    rung_checks: bool = True  # False: replay the pruner without the rung checks (asked for; the results say so)
    base: float | None = None  # the base model's value of the objective (the side file's), for the no-learning stop

    @classmethod
    def load(
        cls, task: str, folder: Path = RESULTS, allow_stale: bool = False, rung_checks: bool | None = None
    ) -> Table:
        """The table of `task`, with its probe readings when the side file is there; TableMismatch when a manifest
        does not match the task's config and libraries here, when the table is marked stale and `allow_stale` is
        not set, or when the forgetting constraint needs the probe readings and they are missing (unless
        `rung_checks` is False; None: False when NO_RUNG_CHECKS is set)."""
        import os

        import pyarrow.parquet as pq
        from curves import TASKS, task_config
        from table_manifest import TableMismatch, check, relative

        if rung_checks is None:
            rung_checks = not os.environ.get(NO_RUNG_CHECKS)
        path = folder / f"curves_{task}.json"
        manifest = json.loads(path.read_text())
        cfg = task_config(TASKS[task]) if task in TASKS else None
        check(manifest, relative(str(path)), cfg, allow_stale)
        grid = manifest["grid"]
        rows = {}
        for row in pq.read_table(folder / f"curves_{task}.parquet").to_pylist():
            rows[(*(row[k] for k in grid), row["train_seed"])] = row
        probes, base = None, None
        side = folder / f"curves_{task}_probes.json"
        if rung_checks and side.is_file():
            side_manifest = json.loads(side.read_text())
            check(side_manifest, relative(str(side)), cfg)
            base = (side_manifest.get("base_objective") or {}).get("value")
            probes = {
                (*(row[k] for k in grid), row["train_seed"]): {
                    int(step): {name: (float(drop), float(excess)) for name, (drop, excess) in sets.items()}
                    for step, sets in json.loads(row["probes"])
                }
                for row in pq.read_table(side.with_suffix(".parquet")).to_pylist()
            }
        elif rung_checks and not manifest.get("stale") and cfg is not None and cfg.search.forgetting_constraint:
            raise TableMismatch(
                f"{relative(str(side))}: no forgetting probe readings for the product's rung checks under "
                f"search.forgetting_constraint; build them (python benchmarks/curves.py --task {task} --probes) "
                "or pass --no-rung-checks to replay the pruner without them"
            )
        return cls(task, grid, manifest["training_seeds"], rows, manifest["config"], probes, rung_checks, base)

    @classmethod
    def load_or_exit(
        cls, task: str, folder: Path = RESULTS, allow_stale: bool = False, rung_checks: bool | None = None
    ) -> Table:
        """`load` for a command line: a refused table is one line on stderr and exit code 2."""
        from table_manifest import TableMismatch

        try:
            return cls.load(task, folder, allow_stale, rung_checks)
        except TableMismatch as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def points(self) -> list[tuple[Any, ...]]:
        return sorted({key[:-1] for key in self.rows}, key=str)

    def worst_final(self) -> float:
        """What a diverged run counts as in a true loss: the worst finite final loss of the table."""
        return max(r["final"] for r in self.rows.values() if math.isfinite(r["final"] or math.nan))

    def seeds_of(self, point: tuple[Any, ...]) -> list[int]:
        """The training seeds recorded for `point`: the table's, and the extra ones (curves.py --add-seeds) its
        best configurations got."""
        return sorted(key[-1] for key in self.rows if key[:-1] == point)

    def true_losses(self) -> dict[tuple[Any, ...], float]:
        """Each grid point's mean final loss over every training seed it has (the truth a strategy is scored by)."""
        worst = self.worst_final()
        return {p: statistics.fmean(self._final(p, s, worst) for s in self.seeds_of(p)) for p in self.points()}

    def seed_sd(self, point: tuple[Any, ...]) -> float:
        worst = self.worst_final()
        return statistics.stdev(self._final(point, s, worst) for s in self.seeds_of(point))

    def pooled_seed_sd(self, top: int = 20) -> dict[str, Any]:
        """ε: the training-seed standard deviation pooled over the best configurations, with its chi-square 95% CI
        on Σ(seeds − 1) degrees of freedom (normal seed noise): one configuration's sd from 3 seeds is too noisy to
        be a threshold. The configurations: those with extra seeds (curves.py --add-seeds: the `top` best), else
        the `top` best (at most a quarter of the table, at least 2)."""
        from scipy.stats import chi2

        truth = self.true_losses()
        extra = [p for p in truth if len(self.seeds_of(p)) > len(self.seeds)]
        k = len(extra) if extra else max(2, min(top, len(truth) // 4))
        chosen = sorted(extra or truth, key=truth.__getitem__)[:k]
        dfs = [len(self.seeds_of(p)) - 1 for p in chosen]
        df = sum(dfs)
        variance = sum(d * self.seed_sd(p) ** 2 for d, p in zip(dfs, chosen, strict=True)) / df
        low, high = (math.sqrt(df * variance / chi2.ppf(q, df)) for q in (0.975, 0.025))
        return {"epsilon": math.sqrt(variance), "low": low, "high": high, "configurations": k, "df": df}

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
    chosen: tuple[Any, ...] | None = None  # the incumbent once this trial ended (the product's finalist rule)


class OraclePruner:
    """The limit of pruning: knows each curve's final value (the table's row for the study's training seed), and
    stops a trial at its first evaluation unless it will become the incumbent (finish better than the product's
    choice so far, and, under the forgetting constraint, within the margins). For the same suggestions, no pruner
    that sees only the curve so far spends fewer steps to the same incumbents. The product never prunes its warm
    starts (the objective exempts them), so they run in full under this pruner too."""

    def __init__(self, table: Table, train_seed: int, defaults: dict[str, Any], constrained: bool) -> None:
        self.table, self.train_seed, self.defaults, self.constrained = table, train_seed, defaults, constrained

    def prune(self, study: Any, trial: Any) -> bool:
        from hpo_action.search.optuna_backend.finalist import chosen_trial

        row = self.table.rows[(*self.table.nearest({**self.defaults, **trial.params}), self.train_seed)]
        final = row["final"] if row["status"] == "ok" else math.inf
        if self.constrained and any(v > 0 for v in json.loads(row.get("forgetting") or "{}").values()):
            return True  # beyond a margin: never the incumbent
        incumbent = chosen_trial(study)
        return final >= (incumbent.value if incumbent is not None else math.inf)


class TableRunner:
    """Stands in for `TrialRunner`: same call, the table's recorded curve instead of training. With the table's
    probe readings (`rung_checks`), it offers `probes` and `probe_now` as TrialRunner does, so the product's
    objective attaches its forgetting rung checks to each trial and reads the recorded probes through them."""

    def __init__(
        self,
        table: Table,
        train_seed: int,
        metric: str = "eval_loss",
        eval_every: int = 0,
        max_steps: int = 0,
        rung_checks: bool = False,
    ) -> None:
        self.table, self.train_seed, self.metric = table, train_seed, metric
        self.eval_every = eval_every  # report only these steps (a sparser cadence than the table's); 0: all
        self.max_steps = max_steps  # the budget: a trial that reached it is complete, whatever the pruner says
        self.log: list[Step] = []
        self.points: dict[int, tuple[Any, ...]] = {}  # trial number → the grid point it ran
        sets = {name for readings in (table.probes or {}).values() for at in readings.values() for name in at}
        self.probes: tuple[str, ...] = tuple(sorted(sets)) if rung_checks else ()  # forgetting_rungs needs them
        self.reading: dict[str, tuple[float, float]] = {}  # the probes at the evaluation being reported

    def probe_now(self) -> dict[str, Any]:
        """What `TrialRunner.probe_now` would read now: the recorded probes of this row at this evaluation."""
        from hpo_action.train.trial import ProbeReading

        return {name: ProbeReading(drop, excess) for name, (drop, excess) in self.reading.items()}

    def run(
        self,
        params: dict[str, Any],
        report: Callable[[float, int], bool] | None = None,
        save_to: Callable[[Any], Path | None] | None = None,
        trial_number: int | None = None,
        checkpoints: Any = None,
    ) -> Any:
        """`checkpoints` (search.resume_trials) is accepted and unused: a looked-up curve has nothing to resume."""
        from hpo_action.errors import TrialError
        from hpo_action.train.trial import Pruned, TrialResult

        point = self.table.nearest(params)
        if trial_number is not None:
            self.points[trial_number] = point
        row = self.table.rows[(*point, self.train_seed)]
        readings = (self.table.probes or {}).get((*point, self.train_seed), {})  # read by the rung checks if on
        curve = [
            (step, value)
            for step, value in zip(row["steps"], row["values"], strict=True)
            if not self.eval_every or step % self.eval_every == 0 or step == row["steps"][-1]
        ]
        for step, value in curve:
            self.reading = readings.get(step, {})
            # the real trial's guard (_Tracker.record): the last evaluation is reported, never pruned
            if report is not None and report(value, step) and step < self.max_steps:
                self.log.append(Step(point, step, None))
                raise Pruned(step, value)
        self.reading = {}
        if row["status"] != "ok":
            self.log.append(Step(point, row["run_steps"], None))
            raise TrialError(row["error"] or "diverged")
        self.log.append(Step(point, row["run_steps"], row["final"]))
        final_probe = readings.get(row["run_steps"], {})  # the trial's own probe at its end (probe side file)
        result = TrialResult(
            value=row["final"],
            metrics={self.metric: row["final"]},
            curve=curve,
            steps=row["run_steps"],
            seconds=row["run_steps"] * row["seconds_per_step"],
            forgetting=json.loads(row.get("forgetting") or "{}"),  # the constraint, when search sets it
            forgetting_drop={name: drop for name, (drop, _) in final_probe.items()},
        )
        if save_to is not None:
            save_to(result)  # the product decides whether it would keep the weights; nothing is written
        return result


class MeasuredTableRunner(TableRunner):
    """A TableRunner that knows the base model's value of the objective, as `TrialRunner.base_metrics` measures
    it: the product's no-learning stop (search/optuna_backend/no_learning.py) applies to the replayed study."""

    def __init__(self, table: Table, train_seed: int, base: float, **options: Any) -> None:
        super().__init__(table, train_seed, **options)
        self.base = base

    def base_metrics(self, params: dict[str, Any]) -> dict[str, float]:
        return {self.metric: self.base}


@dataclass
class Replay:
    """The incumbent after every trial of one replayed study: cumulative steps and its true regret."""

    steps: list[int]
    regret: list[float]
    trials: int
    log: list[Step] = field(default_factory=list)  # each trial's grid point, steps and observed final (the runner's)

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

    def steps_to_stay(self, epsilon: float) -> tuple[float, bool]:
        """Steps spent when the incumbent's true regret reaches ≤ epsilon and stays there to the end of the study,
        and whether it did (False: censored at the study's total steps, the budget)."""
        time = None
        for steps, regret in zip(self.steps, self.regret, strict=True):
            time = (time or steps) if regret <= epsilon else None
        return (float(time), True) if time is not None else (float(self.total_steps()), False)


def study_name(cfg: Any, study_seed: int) -> str:
    """The product's pattern (`hpo-` and 12 hex digits of the config's fingerprint), one name per study seed: real
    studies of distinct users carry distinct names, and Hyperband's brackets hash the name."""
    digest = hashlib.sha256(f"{cfg.fingerprint()}/{study_seed}".encode()).hexdigest()
    return f"hpo-{digest[:12]}"


def replay(
    table: Table,
    cfg: Any,
    study_seed: int,
    train_seed: int,
    truth: dict[tuple[Any, ...], float],
    stop: Callable[[Any], bool] | None = None,
    oracle: bool = False,
) -> Replay:
    """One study of `cfg` against the table, through the product's `open_study` and `run_trials`; with `oracle`,
    the study's pruner is the OraclePruner."""
    import optuna
    from table_manifest import TableMismatch

    from hpo_action.search.optuna_backend import study as study_module
    from hpo_action.search.optuna_backend.finalist import chosen_trial
    from hpo_action.search.space import trial_defaults

    budget = cfg.search.budget
    search = cfg.search
    rungs = search.forgetting_constraint and not search.multi_objective and search.pruner != "none" and not oracle
    if rungs and table.probes is None and table.rung_checks:
        raise TableMismatch(
            f"table {table.task}: no forgetting probe readings for the rung checks under search.forgetting_constraint"
        )
    rungs = rungs and table.probes is not None
    options = {"metric": search.objective.metric, "eval_every": budget.eval_every, "max_steps": budget.max_steps}
    if table.probes is not None and table.base is not None and not oracle:
        runner = MeasuredTableRunner(table, train_seed, table.base, rung_checks=rungs, **options)
    else:
        runner = TableRunner(table, train_seed, rung_checks=rungs, **options)

    def note_incumbent(study: Any, trial: Any) -> None:
        finalist = chosen_trial(study)
        if runner.log and trial.number in runner.points:  # a trial the runner ran (not refused before training)
            runner.log[-1].chosen = runner.points.get(finalist.number) if finalist is not None else None

    best = min(truth.values())
    with tempfile.TemporaryDirectory(prefix="hpo-replay-") as folder:
        search = {"seed": study_seed, "storage": None, "study_name": study_name(cfg, study_seed)}
        cfg = cfg.model_copy(
            update={
                "search": cfg.search.model_copy(update=search),
                "output": cfg.output.model_copy(update={"dir": folder}),
            }
        )
        real_open, real_pruner = study_module.open_storage, study_module.make_pruner
        study_module.open_storage = lambda url, search=None: optuna.storages.InMemoryStorage()
        if oracle:
            constrained = cfg.search.forgetting_constraint
            study_module.make_pruner = lambda cfg: OraclePruner(table, train_seed, trial_defaults(cfg), constrained)
        try:
            study = study_module.open_study(cfg)
        finally:
            study_module.open_storage, study_module.make_pruner = real_open, real_pruner
        count = cfg.search.n_trials if stop is None else 1
        while True:  # with a stopping rule, the loop asks for one trial at a time
            study_module.run_trials(study, cfg, runner, target=count, prune_adapters=False, on_trial=note_incumbent)
            if stop is None or count >= cfg.search.n_trials or stop(study):
                break
            count += 1
    return incumbents(runner.log, truth, best)


def incumbents(log: list[Step], truth: dict[tuple[Any, ...], float], best: float) -> Replay:
    """After each trial: steps so far, and the true regret of the trial the product would choose then."""
    spent = 0
    steps, regrets = [], []
    for step in log:
        spent += step.steps
        steps.append(spent)
        regrets.append(truth[step.chosen] - best if step.chosen is not None else math.inf)
    return Replay(steps, regrets, len(log), log)
