"""A league of peer optimizers on the learning-curve tables (issue 23 item 5): each entry searches the task's own
space through its own library's code, at equal compute (every study stops once it has trained the defaults' median
spend of a 40-trial study, `B` steps), over many study seeds (training seed = study seed mod 3), and is scored as
benchmarks/hpo_efficiency.py scores a strategy: by the *true* regret of the configuration it would hand over.

Entries that are Optuna strategies run through the product's own study code (`replay` of benchmarks/table_replay.py:
the sampler, the warm start, the duplicate check, the last-step guard), with only the pruner (or the space) changed:

    defaults     hpo-action's defaults (TPE multivariate, 3 start-up trials; Hyperband from the first evaluation;
                 two warm starts, never pruned)
    median, percentile, sh, wilcoxon, hb_rf2, hb_rf3
                 Optuna's MedianPruner, PercentilePruner(25), SuccessiveHalvingPruner, WilcoxonPruner, Hyperband
                 with reduction factor 2 and 3, each with the product's options for it (samplers.make_pruner)
    sh20         SuccessiveHalvingPruner(min_resource=20, reduction_factor=3) (the audit's best single change)
    no_warm      the defaults without the warm starts
    powerlaw     learning-curve extrapolation: a power law fitted per trial (LearningCurvePruner below), pruning a
                 trial whose predicted final loss is worse than the incumbent's
    lr_first     a 1-D search of the learning rate over the task's range, the rest at the trial defaults
    random       random search without pruning (the anchor of the ≤ 0.33 goal)
    oracle       the oracle pruner with the defaults' sampler (table_replay.OraclePruner): the limit of pruning

Entries from other libraries drive their optimizer's ask/tell (or scheduler) interface against the same table
(TableBlackbox: a configuration at a fidelity of `s` steps reads the recorded curve at `s`; a run resumed from a
paused trial pays only the new steps; the incumbent is the best feasible configuration evaluated at the full budget,
the product's finalist rule):

    dehb         DEHB (`dehb`), fidelity = training steps, eta 3, from one evaluation to the full budget
    smac_hb      SMAC3's MultiFidelityFacade with its Hyperband intensifier (`smac`), budgets as DEHB's
    st_asha, st_hyperband, st_bohb
                 Syne Tune's ASHA, asynchronous Hyperband (ASHA with 2 brackets) and BOHB (ASHA with a KDE
                 model) (`syne-tune`), driven by a sequential one-worker event loop, the calls its Tuner makes
                 with a simulated backend. Syne Tune 0.16 no longer ships MOBSTER or DyHPO (its GP searchers were
                 removed); BOHB is its model-based multi-fidelity scheduler there.

Metrics per entry: the Kaplan-Meier median of the steps until the incumbent stays within ε (with a bootstrap CI),
P(regret ≤ ε) at 25/50/100% of B (Wilson CIs), the median regret at B, and the oracle fraction (the oracle's KM
median ÷ the entry's).

    python benchmarks/league.py                              # both tables, 100 study seeds
    python benchmarks/league.py --tasks quickstart --entries defaults,sh20,dehb --seeds 20
    python benchmarks/league.py --tasks flat --unconstrained  # the loss alone picks the incumbent
    python benchmarks/league.py --entries defaults,hb_rf2 --output results/league_before.json  # another file
    python benchmarks/league.py --markdown                   # RESULTS.md's league table, from the file
    python benchmarks/league.py --entries defaults,no_warm --budget quickstart=3075   # B given, not derived:
                                                             # rerun rows at an earlier run's B, the rest kept

Under the forgetting constraint the product-study entries run the product's forgetting rung checks on the table's
probe readings (table_replay.py); `--no-rung-checks` replays them without (the manifest says so). The peers' loops
never had them: the product's rung checks are the product's.

Writes the `league` key of benchmarks/results/hpo_efficiency.json (or of --output) after each entry (the other keys,
and the other task's league, are kept; a run that adds entries to a task with the same B and ε keeps the rows it
did not rerun).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from efficiency_stats import bootstrap_median, finite, km_ratio, km_summary, proportion
from table_replay import NO_RUNG_CHECKS, RESULTS, Replay, Table, replay

UNCONSTRAINED = "HPO_LEAGUE_UNCONSTRAINED"  # set by --unconstrained, read in every worker process
EQUAL_TRIALS = 40  # the defaults' study length whose median spend is the league's budget B
MAX_TRIALS = 400  # an upper bound on a capped study's trials (the step cap ends it first)
BUDGET_FRACTIONS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Entry:
    """A league entry: a label, the library whose code runs it, and how (product-study overrides, or a peer loop)."""

    label: str
    library: str
    overrides: dict[str, Any] = field(default_factory=dict)
    peer: str | None = None  # the name of a peer loop in PEERS; None: a replay through the product's study code
    pruner: str | None = None  # a pruner the product does not offer, built here (see PRUNERS)


ENTRIES: dict[str, Entry] = {
    "defaults": Entry("hpo-action defaults (TPE + Hyperband + warm starts)", "optuna"),
    "median": Entry("TPE + MedianPruner", "optuna", {"pruner": "median"}),
    "percentile": Entry("TPE + PercentilePruner(25)", "optuna", {"pruner": "percentile"}),
    "sh": Entry("TPE + SuccessiveHalving (min 1 eval, rf 3)", "optuna", {"pruner": "successive_halving"}),
    "sh20": Entry(
        "TPE + SuccessiveHalving (min 20 steps, rf 3)",
        "optuna",
        {"pruner": "successive_halving", "pruner_options": {"min_resource": 20, "reduction_factor": 3}},
    ),
    "wilcoxon": Entry("TPE + WilcoxonPruner", "optuna", {"pruner": "wilcoxon"}),
    "hb_rf2": Entry("TPE + Hyperband (rf 2)", "optuna", {"pruner_options": {"reduction_factor": 2}}),
    "hb_rf3": Entry("TPE + Hyperband (rf 3)", "optuna", {"pruner_options": {"reduction_factor": 3}}),
    "no_warm": Entry("defaults without the warm starts", "optuna", {"warm_start": False}),
    "powerlaw": Entry("TPE + power-law curve extrapolation pruner", "optuna+scipy", pruner="powerlaw"),
    "lr_first": Entry("1-D learning-rate search (rest at trial defaults)", "optuna", {"lr_only": True}),
    "random": Entry("random search, no pruning", "optuna", {"sampler": "random", "pruner": "none"}),
    "dehb": Entry("DEHB (eta 3)", "dehb", peer="dehb"),
    "smac_hb": Entry("SMAC3 multi-fidelity (Hyperband intensifier)", "smac", peer="smac_hb"),
    "st_asha": Entry("Syne Tune ASHA (random, rf 3)", "syne_tune", peer="st_asha"),
    "st_hyperband": Entry("Syne Tune asynchronous Hyperband (2 brackets)", "syne_tune", peer="st_hyperband"),
    "st_bohb": Entry("Syne Tune BOHB (ASHA + KDE model)", "syne_tune", peer="st_bohb"),
    "oracle": Entry("oracle pruner, the defaults' sampler", "optuna"),
}


def available(entry: Entry) -> bool:
    """Whether the entry's library is installed here (the league extra)."""
    name = entry.library.split("+")[0]
    return importlib.util.find_spec(name) is not None


# --- the product's study, capped at B steps ------------------------------------------------------------------------


class LearningCurvePruner:
    """Learning-curve extrapolation (Domhan et al. 2015, with one parametric family): after two or more evaluations,
    fit y(t) = a + b·t^(−c) to the trial's curve (c fixed at 0.5 with two points, fitted in [0.1, 3] with three or
    more) and prune when the predicted value at the full budget is worse than the incumbent's final value. Never
    prunes at the first evaluation (nothing to extrapolate) or without a completed trial to compare with."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def prune(self, study: Any, trial: Any) -> bool:
        from hpo_action.search.optuna_backend.finalist import chosen_trial

        curve = sorted(trial.intermediate_values.items())
        incumbent = chosen_trial(study)
        if len(curve) < 2 or incumbent is None or incumbent.value is None:
            return False
        return predict_final(curve, self.max_steps) > incumbent.value


def predict_final(curve: list[tuple[int, float]], horizon: int) -> float:
    """The power law a + b·t^(−c) fitted to `curve` (least squares), evaluated at `horizon`."""
    import numpy as np
    from scipy.optimize import curve_fit

    t = np.array([s for s, _ in curve], dtype=float)
    y = np.array([v for _, v in curve], dtype=float)
    if not np.all(np.isfinite(y)):
        return math.inf
    if len(curve) == 2:
        x = t**-0.5
        b = (y[1] - y[0]) / (x[1] - x[0])
        return float(y[1] + b * (horizon**-0.5 - x[1]))
    try:
        (a, b, c), _ = curve_fit(
            lambda s, a, b, c: a + b * s**-c,
            t,
            y,
            p0=(y[-1], (y[0] - y[-1]) * t[0] ** 0.5, 0.5),
            bounds=([-np.inf, -np.inf, 0.1], [np.inf, np.inf, 3.0]),
            maxfev=2000,
        )
    except RuntimeError:  # no fit: predict the last value
        return float(y[-1])
    return float(a + b * horizon**-c)


def capped(budget: float) -> Callable[[Any], bool]:
    """A stopping rule: the study has trained `budget` steps (pruned trials count up to their last report)."""

    def stop(study: Any) -> bool:
        spent = 0
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished():
                spent += max(t.intermediate_values, default=0)
        return spent >= budget

    return stop


def truncate(run: Replay, budget: float) -> Replay:
    """The replay as it stood once `budget` steps were spent (trials that ended beyond it are dropped)."""
    keep = sum(s <= budget for s in run.steps)
    return Replay(run.steps[:keep], run.regret[:keep], keep)


def entry_config(table: Table, entry: Entry, trials: int) -> Any:
    from hpo_efficiency import strategy_config

    from hpo_action.search.space import searched, warm_start_params

    overrides = dict(entry.overrides)
    if os.environ.get(UNCONSTRAINED):  # --unconstrained: the loss alone picks the incumbent
        overrides["forgetting_constraint"] = False
    if overrides.pop("lr_only", False):  # the other searched dimensions fixed at the warm start's values
        base = strategy_config(table, "league", {}, trials)
        starts = warm_start_params(base)
        space = {name: spec.model_dump(exclude_none=True) for name, spec in base.search.space.items()}
        for name in searched(base):
            if name != "learning_rate":
                space[name] = {"type": "fixed", "value": starts[name]}
        overrides["space"] = space
    return strategy_config(table, "league", overrides, trials)


def run_replay(table: Table, key: str, study_seed: int, train_seed: int, budget: float | None) -> Replay:
    """One study of a product-study entry; `budget` None: the defaults' 40-trial study that defines B."""
    from hpo_action.search.optuna_backend import study as study_module

    entry = ENTRIES[key]
    truth = table.true_losses()
    cfg = entry_config(table, entry, EQUAL_TRIALS if budget is None else MAX_TRIALS)
    stop = None if budget is None else capped(budget)
    real = study_module.make_pruner
    if entry.pruner == "powerlaw":
        study_module.make_pruner = lambda cfg: LearningCurvePruner(cfg.search.budget.max_steps)
    try:
        run = replay(table, cfg, study_seed, train_seed, truth, stop, oracle=key == "oracle")
    finally:
        study_module.make_pruner = real
    return run if budget is None else truncate(run, budget)


# --- peers through their own libraries -----------------------------------------------------------------------------


class BudgetSpent(Exception):
    """The study trained its B steps: the peer's loop ends here."""


class TableBlackbox:
    """The table as a multi-fidelity objective for a peer library: `evaluate(point, steps, resumed_from)` reads
    the recorded curve of the study's training seed at `steps` (a curve that diverged before reads the table's
    worst final loss) and pays `steps − resumed_from`; a full-budget evaluation of a feasible, finished row is a
    candidate for the incumbent (the best such value so far, as the product's finalist rule picks)."""

    def __init__(
        self, table: Table, train_seed: int, budget: float, max_steps: int, eval_every: int, constrained: bool
    ) -> None:
        self.table, self.train_seed, self.budget, self.max_steps = table, train_seed, budget, max_steps
        self.eval_every = eval_every
        self.constrained = constrained
        self.truth = table.true_losses()
        self.best = min(self.truth.values())
        self.worst = table.worst_final()
        self.spent = 0
        self.incumbent: tuple[float, tuple[Any, ...]] | None = None
        self.steps: list[int] = []
        self.regret: list[float] = []

    def value(self, point: tuple[Any, ...], steps: int) -> float:
        row = self.table.rows[(*point, self.train_seed)]
        seen = [v for s, v in zip(row["steps"], row["values"], strict=True) if s <= steps]
        if (row["status"] != "ok" and steps >= row["run_steps"]) or not seen:
            return self.worst
        value = seen[-1]
        return value if math.isfinite(value) else self.worst

    def evaluate(self, point: tuple[Any, ...], steps: int, resumed_from: int = 0) -> float:
        """The loss at `steps`; BudgetSpent (before training) once the study has trained its budget."""
        if self.spent >= self.budget:
            raise BudgetSpent
        # the table's cadence: a fidelity between two evaluations trains to the nearest one
        steps = min(max(round(steps / self.eval_every), 1) * self.eval_every, self.max_steps)
        value = self.value(point, steps)
        row = self.table.rows[(*point, self.train_seed)]
        self.spent += max(steps - resumed_from, 0)
        feasible = not self.constrained or all(v <= 0 for v in json.loads(row.get("forgetting") or "{}").values())
        full = steps >= self.max_steps and row["status"] == "ok" and feasible
        if full and (self.incumbent is None or value < self.incumbent[0]):
            self.incumbent = (value, point)
        if self.spent <= self.budget:
            self.steps.append(self.spent)
            self.regret.append(self.truth[self.incumbent[1]] - self.best if self.incumbent else math.inf)
        return value

    def result(self) -> Replay:
        return Replay(self.steps, self.regret, len(self.steps))


_TASK_CACHE: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}


def _task_facts(table: Table) -> tuple[dict[str, Any], dict[str, Any]]:
    """The searched dimensions and the trial defaults of the table's task (built once: a config is slow to build)."""
    from hpo_action.search.space import searched, trial_defaults

    if table.task not in _TASK_CACHE:
        cfg = entry_config(table, ENTRIES["defaults"], 1)
        _TASK_CACHE[table.task] = (searched(cfg), trial_defaults(cfg))
    return _TASK_CACHE[table.task]


def space_of(table: Table) -> dict[str, Any]:
    """The dimensions the product searches on this task (search.space and the remedies searched by default)."""
    return _task_facts(table)[0]


def to_point(table: Table, params: dict[str, Any]) -> tuple[Any, ...]:
    """The grid point a peer's suggestion runs as (the trial defaults for what it does not set)."""
    return table.nearest({**_task_facts(table)[1], **params})


def configspace(table: Table, seed: int) -> Any:
    """The space as a ConfigSpace (DEHB, SMAC): a float range (log where the product's is), a categorical choice."""
    from ConfigSpace import Categorical, ConfigurationSpace, Float

    cs = ConfigurationSpace(seed=seed)
    for name, spec in space_of(table).items():
        if spec.type == "categorical":
            cs.add(Categorical(name, list(spec.choices)))
        else:
            cs.add(Float(name, (spec.low, spec.high), log=spec.log))
    return cs


def rungs(max_steps: int, eval_every: int) -> tuple[int, int]:
    """The fidelity range of the multi-fidelity peers: one evaluation to the full budget."""
    return eval_every, max_steps


def peer_dehb(box: TableBlackbox, table: Table, seed: int, eval_every: int) -> None:
    """DEHB's ask/tell: each job trains its configuration from scratch to the job's fidelity (DEHB's model)."""
    import tempfile

    from dehb import DEHB

    low, high = rungs(box.max_steps, eval_every)
    cs = configspace(table, seed)
    with tempfile.TemporaryDirectory(prefix="league-dehb-") as folder:
        opt = DEHB(
            cs=cs,
            dimensions=len(cs),
            min_fidelity=low,
            max_fidelity=high,
            eta=3,
            n_workers=1,
            seed=seed,
            output_path=folder,
            log_level="ERROR",
            save_freq="end",  # never reached: the loop ends at the budget, not through DEHB.run
        )
        while True:
            job = opt.ask()
            loss = box.evaluate(to_point(table, dict(job["config"])), round(job["fidelity"]))
            opt.tell(job, {"fitness": loss, "cost": float(job["fidelity"])})


def peer_smac(box: TableBlackbox, table: Table, seed: int, eval_every: int) -> None:
    """SMAC3's multi-fidelity facade (random forest + Hyperband intensifier) through ask/tell; a trial trains its
    configuration from scratch to its budget (SMAC's model)."""
    import tempfile
    from pathlib import Path

    from smac import MultiFidelityFacade, Scenario
    from smac.runhistory.dataclasses import TrialValue

    low, high = rungs(box.max_steps, eval_every)
    with tempfile.TemporaryDirectory(prefix="league-smac-") as folder:
        scenario = Scenario(
            configspace(table, seed),
            deterministic=True,
            n_trials=100000,
            min_budget=low,
            max_budget=high,
            seed=seed,
            output_directory=Path(folder),
        )
        smac = MultiFidelityFacade(
            scenario,
            lambda config, seed=0, budget=high: 0.0,  # never called: ask/tell
            intensifier=MultiFidelityFacade.get_intensifier(scenario, eta=3),
            overwrite=True,
            logging_level=40,
        )
        while True:
            info = smac.ask()
            loss = box.evaluate(to_point(table, dict(info.config)), round(info.budget))
            smac.tell(info, TrialValue(cost=loss, time=0.0))


def peer_syne_tune(kind: str) -> Callable[[TableBlackbox, Table, int, int], None]:
    """A Syne Tune scheduler in a sequential one-worker event loop, the calls its Tuner makes with a simulated
    backend: suggest, on_trial_add, on_trial_result after each evaluation (STOP ends the trial), and at the full
    budget on_trial_result then on_trial_complete. Resource = evaluations (max_t = max_steps / eval_every)."""

    def run(box: TableBlackbox, table: Table, seed: int, eval_every: int) -> None:
        import numpy as np
        from syne_tune.backend.trial_status import Trial
        from syne_tune.config_space import choice, loguniform, uniform
        from syne_tune.optimizer import baselines
        from syne_tune.optimizer.scheduler import SchedulerDecision

        np.random.seed(seed)  # ASHA draws each trial's bracket from numpy's global generator
        space: dict[str, Any] = {}
        for name, spec in space_of(table).items():
            if spec.type == "categorical":
                space[name] = choice(list(spec.choices))
            else:
                space[name] = (loguniform if spec.log else uniform)(spec.low, spec.high)
        max_t = box.max_steps // eval_every
        common = {"metric": "loss", "time_attr": "epoch", "max_t": max_t, "do_minimize": True, "random_seed": seed}
        factory = {
            "asha": lambda: baselines.ASHA(space, grace_period=1, reduction_factor=3, **common),
            "hyperband": lambda: baselines.ASHA(space, grace_period=1, reduction_factor=3, brackets=2, **common),
            "bohb": lambda: baselines.BOHB(space, grace_period=1, reduction_factor=3, **common),
        }
        scheduler = factory[kind]()
        trial_id = 0
        while True:
            suggestion = scheduler.suggest()
            if suggestion is None:
                return
            trial = Trial(trial_id=trial_id, config=suggestion.config, creation_time=None)
            trial_id += 1
            scheduler.on_trial_add(trial)
            point = to_point(table, dict(suggestion.config))
            for epoch in range(1, max_t + 1):
                result = {"epoch": epoch, "loss": box.evaluate(point, epoch * eval_every, (epoch - 1) * eval_every)}
                decision = scheduler.on_trial_result(trial, result)
                if epoch == max_t:
                    scheduler.on_trial_complete(trial, result)
                elif decision != SchedulerDecision.CONTINUE:
                    break

    return run


PEERS: dict[str, Callable[[TableBlackbox, Table, int, int], None]] = {
    "dehb": peer_dehb,
    "smac_hb": peer_smac,
    "st_asha": peer_syne_tune("asha"),
    "st_hyperband": peer_syne_tune("hyperband"),
    "st_bohb": peer_syne_tune("bohb"),
}


def run_peer(table: Table, key: str, study_seed: int, train_seed: int, budget: float) -> Replay:
    cfg = entry_config(table, ENTRIES["defaults"], 1)
    steps = cfg.search.budget
    box = TableBlackbox(table, train_seed, budget, steps.max_steps, steps.eval_every, cfg.search.forgetting_constraint)
    with contextlib.suppress(BudgetSpent):
        PEERS[ENTRIES[key].peer or key](box, table, study_seed, steps.eval_every)
    return box.result()


# --- the league ----------------------------------------------------------------------------------------------------


_TABLES: dict[str, Table] = {}
CHUNK = 25  # study seeds per job


def _work(job: tuple[str, str, list[tuple[int, int]], float | None]) -> tuple[str, list[Replay], float]:
    """One process's share: an entry's studies for some seeds (budget None: the defaults' uncapped studies), and
    the CPU seconds they took."""
    import logging

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)  # the peers' libraries log per trial
    task, key, pairs, budget = job
    if task not in _TABLES:
        _TABLES[task] = Table.load(task)
    table = _TABLES[task]
    started = time.process_time()
    if ENTRIES[key].peer and budget is not None:
        runs = [run_peer(table, key, seed, train_seed, budget) for seed, train_seed in pairs]
    else:
        runs = [run_replay(table, key, seed, train_seed, budget) for seed, train_seed in pairs]
    return key, runs, time.process_time() - started


def run_entries(
    task: str,
    keys: list[str],
    pairs_of: dict[str, list[tuple[int, int]]],
    budget: float | None,
    jobs: int,
    on_entry: Callable[[str, list[Replay] | None, float, str | None], None],
) -> None:
    """Each entry's studies on `jobs` processes (chunks of CHUNK seeds, in seed order); `on_entry(key, replays,
    cpu seconds, failure)` as each entry completes, in the order of `keys` (a library that fails is reported, not
    hidden)."""
    from concurrent.futures import ProcessPoolExecutor

    work = [
        (task, key, pairs_of[key][i : i + CHUNK], budget) for key in keys for i in range(0, len(pairs_of[key]), CHUNK)
    ]
    left = {key: sum(job[1] == key for job in work) for key in keys}
    runs: dict[str, list[Replay]] = {key: [] for key in keys}
    cpu: dict[str, float] = dict.fromkeys(keys, 0.0)
    failed: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_work, job) for job in work]
        for (_, key, _, _), future in zip(work, futures, strict=True):
            try:
                _, replays, seconds = future.result()
                runs[key].extend(replays)
                cpu[key] += seconds
            except Exception as err:  # a library that cannot run here
                failed[key] = f"{type(err).__name__}: {str(err)[:160]}"
            left[key] -= 1
            if not left[key]:
                on_entry(key, None if key in failed else runs[key], cpu[key], failed.get(key))


def stay_times(runs: list[Replay], epsilon: float, budget: float) -> tuple[list[float], list[bool]]:
    """Steps until each replay stays within ε, censored at B (a study that ended early is censored where it ended)."""
    pairs = [r.steps_to_stay(epsilon) for r in runs]
    return [t for t, _ in pairs], [e for _, e in pairs]


def entry_summary(
    runs: list[Replay], oracle: tuple[list[float], list[bool]], epsilon: float, budget: float, seconds: float
) -> dict[str, Any]:
    stays = stay_times(runs, epsilon, budget)
    oracle = (oracle[0][: len(runs)], oracle[1][: len(runs)])  # paired: an entry on fewer seeds has their prefix
    return {
        "replays": len(runs),
        "steps_to_stay_within_epsilon": km_summary(*stays),
        "p_within_epsilon": {
            f"{fraction:.0%}": proportion(sum(r.regret_at(fraction * budget) <= epsilon for r in runs), len(runs))
            for fraction in BUDGET_FRACTIONS
        },
        "regret_at_equal_compute": bootstrap_median([r.regret_at(budget) for r in runs]),
        "oracle_fraction": km_ratio(oracle, stays),
        "evaluations_median": statistics.median(r.trials for r in runs),  # trials (product) or evaluations (peers)
        "cpu_seconds": round(seconds, 1),
    }


def league(
    task: str,
    keys: list[str],
    seeds: int,
    slow_seeds: int,
    slow: set[str],
    jobs: int,
    emit: Callable[[Any], None],
    given_budget: float | None = None,
) -> dict[str, Any]:
    """Every entry on one table: B from the defaults' 40-trial studies (or `given_budget`: an earlier run's B, so
    that rows kept from it stay at equal compute), then each entry capped at B; `emit` gets the result so far after
    each entry (a long run leaves what it finished)."""
    table = Table.load_or_exit(task)
    epsilon = table.pooled_seed_sd()["epsilon"]
    pairs = [(seed, table.seeds[seed % len(table.seeds)]) for seed in range(seeds)]
    runs: dict[str, list[Replay]] = {}
    cpu: dict[str, float] = {}
    result: dict[str, Any] = {"epsilon": epsilon, "entries": {}, "not_run": {}}

    def uncapped(key: str, replays: list[Replay] | None, seconds: float, failure: str | None) -> None:
        assert replays is not None, failure
        result["equal_compute_steps"] = float(statistics.median(r.total_steps() for r in replays))
        runs[key], cpu[key] = replays, seconds

    run_entries(task, ["defaults"], {"defaults": pairs}, None, jobs, uncapped)
    if given_budget is not None:
        result["defaults_median_40_trial_steps"] = result["equal_compute_steps"]  # what the rule would give now
        result["budget_given"] = True
        result["equal_compute_steps"] = float(given_budget)
    budget = result["equal_compute_steps"]
    runs["defaults"] = [truncate(r, budget) for r in runs["defaults"]]
    others = []
    for key in ["oracle", *[k for k in keys if k not in ("defaults", "oracle")]]:
        if available(ENTRIES[key]):
            others.append(key)
        else:
            result["not_run"][key] = f"{ENTRIES[key].library} is not installed (pip install -e '.[league]')"

    def summarize(key: str, replays: list[Replay] | None, seconds: float, failure: str | None) -> None:
        if replays is None:
            result["not_run"][key] = failure
            return
        runs[key], cpu[key] = replays, seconds
        oracle = stay_times(runs["oracle"], epsilon, budget)
        for name in ["defaults", key] if key == "oracle" else [key]:
            result["entries"][name] = {
                "label": ENTRIES[name].label,
                "library": ENTRIES[name].library,
                **entry_summary(runs[name], oracle, epsilon, budget, cpu[name]),
            }
        print(f"{task} {key}: {len(replays)} studies, {seconds:.0f} CPU s", flush=True)
        emit(result)

    pairs_of = {key: pairs[:slow_seeds] if key in slow else pairs for key in others}
    run_entries(task, others, pairs_of, budget, jobs, summarize)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="quickstart,flat")
    parser.add_argument("--entries", default=",".join(ENTRIES))
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--slow-seeds", type=int, help="Study seeds of the entries in --slow (default --seeds).")
    parser.add_argument("--slow", default="", help="Entries whose library is slow here (comma-separated).")
    parser.add_argument("--jobs", type=int, default=1, help="Processes (each entry's seeds in chunks of 25).")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave hpo_efficiency.json alone.")
    parser.add_argument("--output", help="Write the league key into this JSON file instead of hpo_efficiency.json.")
    parser.add_argument("--markdown", action="store_true", help="Print RESULTS.md's league table from the file.")
    parser.add_argument("--budget", action="append", default=[], help="task=B: B given (an earlier run's B).")
    parser.add_argument(
        "--no-rung-checks", action="store_true", help="Replay the pruners without the forgetting rung checks."
    )
    parser.add_argument(
        "--unconstrained",
        action="store_true",
        help="Without search.forgetting_constraint (a table whose rows do not vary the remedies, e.g. flat).",
    )
    args = parser.parse_args()
    if args.unconstrained:
        os.environ[UNCONSTRAINED] = "1"
    if args.no_rung_checks:
        os.environ[NO_RUNG_CHECKS] = "1"  # read by Table.load in every worker process
    budgets = {task: float(b) for task, b in (item.split("=", 1) for item in args.budget)}
    if args.markdown:
        source = Path(args.output) if args.output else RESULTS / "hpo_efficiency.json"
        print(markdown(json.loads(source.read_text())["league"]))
        return

    from hpo_action.session import quiet_libraries

    quiet_libraries()
    started = time.monotonic()
    keys = args.entries.split(",")
    slow = set(filter(None, args.slow.split(",")))
    for task in args.tasks.split(","):

        def emit(result: dict[str, Any], task: str = task) -> None:
            if not args.no_write:
                write(task, result, args, slow, time.monotonic() - started)

        seeds = args.slow_seeds or args.seeds
        result = league(task, keys, args.seeds, seeds, slow, args.jobs, emit, budgets.get(task))
        print_table(task, result)


def write(task: str, result: dict[str, Any], args: argparse.Namespace, slow: set[str], wall: float) -> None:
    """The task's league into hpo_efficiency.json's `league` key (the other keys, and the other task, kept)."""
    from hpo_efficiency import manifest_pins

    path = Path(args.output) if args.output else RESULTS / "hpo_efficiency.json"
    existing = json.loads(path.read_text()) if path.is_file() else {}
    league_key = existing.get("league", {})
    league_key.update(
        {
            "study_seeds": args.seeds,
            "slow_entries_study_seeds": dict.fromkeys(sorted(slow), args.slow_seeds) if args.slow_seeds else {},
            "training_seed_rule": "study seed mod the table's training seeds",
            "budget_rule": f"B = median steps of the defaults' {EQUAL_TRIALS}-trial studies; every study stops at B",
        }
    )
    result = {**result, "forgetting_constraint": not args.unconstrained}
    before = league_key.get("tasks", {}).get(task, {})
    same = all(before.get(k) == result.get(k) for k in ("equal_compute_steps", "epsilon"))
    if same:  # a run that adds entries to a task: the rows it did not rerun are kept (a rerun row replaces its own)
        result["entries"] = {**before.get("entries", {}), **result["entries"]}
        result["not_run"] = {k: v for k, v in result["not_run"].items() if k not in result["entries"]}
    for name, value in (("tasks", finite(result)), ("manifest", manifest_pins(task)), ("wall_s", round(wall, 1))):
        league_key.setdefault(name, {})[task] = value
    existing["league"] = league_key
    path.write_text(json.dumps(existing, indent=2) + "\n")


def print_table(task: str, result: dict[str, Any]) -> None:
    print(f"\n{task}: B = {result['equal_compute_steps']:.0f} steps, ε = {result['epsilon']:.4f}")
    for key, row in result["entries"].items():
        km = row["steps_to_stay_within_epsilon"]
        p = row["p_within_epsilon"]
        of = row["oracle_fraction"]
        print(
            f"{key:11}{row['label'][:46]:46} KM {_n(km['median'])} [{_n(km['low'])}, {_n(km['high'])}] "
            f"{km['events']}/{km['replays']}  P≤ε {p['25%']['p']:.2f}/{p['50%']['p']:.2f}/{p['100%']['p']:.2f}  "
            f"regret@B {row['regret_at_equal_compute']['median']:.4g}  "
            f"oracle {'undefined' if of is None else format(of['ratio'], '.2f')}"
        )
    for key, why in result["not_run"].items():
        print(f"{key:11}not run: {why}")


def markdown(league_result: dict[str, Any]) -> str:
    """RESULTS.md's league table for each task, from the `league` key of hpo_efficiency.json."""
    lines = []
    for task, result in league_result["tasks"].items():
        lines += [
            f"**{task}** — B = {result['equal_compute_steps']:.0f} steps (the defaults' median {EQUAL_TRIALS}-trial "
            f"spend), ε = {result['epsilon']:.4f}",
            "",
            "| entry | library | studies | steps to stay within ε (KM median [95% CI]) | stayed | "
            "P(regret ≤ ε) at 25% / 50% / 100% of B | regret at B (median) | oracle fraction |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, row in result["entries"].items():
            km, p, of = row["steps_to_stay_within_epsilon"], row["p_within_epsilon"], row["oracle_fraction"]
            full = p["100%"]
            fraction = "undefined" if of is None else f"{of['ratio']:.2f} [{_g(of['low'])}, {_g(of['high'])}]"
            shares = f"{p['25%']['p']:.2f} / {p['50%']['p']:.2f} / {full['p']:.2f}"
            lines.append(
                f"| {key}: {row['label']} | {row['library']} | {row['replays']} | "
                f"{_n(km['median'])} [{_n(km['low'])}, {_n(km['high'])}] | {km['events']} | "
                f"{shares} [{full['low']:.2f}, {full['high']:.2f}] | "
                f"{_g(row['regret_at_equal_compute']['median'])} | {fraction} |"
            )
        for key, why in result["not_run"].items():
            lines.append(f"| {key}: {ENTRIES[key].label} | {ENTRIES[key].library} | not run: {why} | | | | | |")
        lines.append("")
    return "\n".join(lines)


def _g(value: float | None) -> str:
    return "never" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _n(value: float | None) -> str:
    return "never" if value is None or not math.isfinite(value) else f"{value:.0f}"


if __name__ == "__main__":
    main()
