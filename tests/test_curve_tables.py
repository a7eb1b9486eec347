"""The learning-curve tables and their replay (benchmarks/curves.py, table_replay.py, hpo_efficiency.py): the replay
runs the product's study code as a real run does (its own study name per seed, no prune at the last step, the
forgetting constraint, the oracle pruner's limit), the metrics of "found it" (stays within ε, Kaplan-Meier median
checked against scipy), the manifest refusal, and the drift test that retrains rows of the committed table."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

from curves import TASKS, run_one, session_runner, task_config
from efficiency_stats import km_median, km_summary
from hpo_efficiency import manifest_pins, strategy_config
from table_manifest import TableMismatch, config_pin
from table_replay import Replay, Table, TableRunner, replay, study_name

from hpo_action.train.trial import Pruned

RESULTS = ROOT / "benchmarks" / "results"
DRIFT_TOLERANCE = 0.02  # relative, on eval_loss at steps 25 and 50: room for another CPU's float rounding only
MARGIN = 0.05  # the quickstart gate's margin on its forgetting set `copy`
PROBE_TOLERANCE = 2 / 128  # on a probe's drop in exact match over its 128 rows: two rows' answers, no more


def synthetic_table(infeasible: tuple[Any, ...] | None = None, drops: dict[int, float] | None = None) -> Table:
    """A table over today's quickstart space: a bowl around lr 1e-2 whose curves fall towards their final loss;
    `infeasible` marks one grid point as forgetting beyond the margin. Every row's probe (set `copy`, margin 0.05
    in the quickstart's gate) reads `drops[step]` at each evaluation (default 0: nothing forgotten), the constraint
    value standing in for the gate's test being drop − margin."""
    grid = TASKS["quickstart"].grid
    rows = {}
    for config in TASKS["quickstart"].configurations():
        point = tuple(config[k] for k in grid)
        final = (math.log10(config["learning_rate"]) + 2) ** 2 + 0.05 * (config["lora_r"] == 8)
        final += 0.1 * config["kl_to_base"] + 0.02 * config["replay_ratio"] + 0.1
        excess = 0.1 if point == infeasible else -0.01
        steps = [25, 50, 75, 100]
        rows[(*point, 0)] = {
            **config,
            "steps": steps,
            "values": [final + 2.0 * (1 - s / 100) for s in steps],
            "final": final,
            "status": "ok",
            "error": None,
            "forgetting": json.dumps({"copy": excess}),
            "run_steps": 100,
            "seconds_per_step": 0.1,
        }
    readings = {s: {"copy": (d, d - MARGIN)} for s, d in {25: 0.0, 50: 0.0, 75: 0.0, 100: 0.0, **(drops or {})}.items()}
    probes = dict.fromkeys(rows, readings)
    return Table("synthetic", grid, [0], rows, config_pin(task_config(TASKS["quickstart"])), probes)


def copy_table(folder: Path, task: str = "quickstart") -> None:
    """The committed table of `task` and its probe readings, copied into `folder`."""
    for name in (f"curves_{task}", f"curves_{task}_probes"):
        for suffix in (".json", ".parquet"):
            shutil.copy(RESULTS / f"{name}{suffix}", folder / f"{name}{suffix}")


def replay_once(table: Table, key: str, seed: int, trials: int = 8, oracle: bool = False) -> Replay:
    cfg = strategy_config(table, key, {}, trials)
    return replay(table, cfg, seed, 0, table.true_losses(), oracle=oracle)


def test_a_replayed_study_runs_its_trials_through_the_product():
    """Regression: the product's objective passes `checkpoints=` to the runner; the table runner refused it and
    every replayed trial failed (every strategy then showed an infinite regret)."""
    run = replay_once(synthetic_table(), "a", seed=0)
    assert run.trials == 8
    assert math.isfinite(run.final_regret())


def test_a_trial_is_never_pruned_at_its_last_step():
    table = synthetic_table()
    params = {"learning_rate": 0.01, "lora_r": 16, "replay_ratio": 0.3, "kl_to_base": 0.2}
    always = TableRunner(table, 0, eval_every=25, max_steps=100)
    with pytest.raises(Pruned) as pruned:
        always.run(params, report=lambda value, step: True)
    assert pruned.value.step == 25
    last_only = TableRunner(table, 0, eval_every=100, max_steps=100)  # one evaluation, at the last step
    result = last_only.run(params, report=lambda value, step: True)
    assert result.steps == 100 and result.value == table.rows[(0.00949, 16, 0.3, 0.2, 0)]["final"]


def test_each_study_seed_has_its_own_name_in_the_products_pattern(monkeypatch: pytest.MonkeyPatch):
    from hpo_action.search.optuna_backend import study as study_module

    table = synthetic_table()
    seen = []
    real = study_module.open_study
    monkeypatch.setattr(study_module, "open_study", lambda cfg: seen.append(cfg.search.study_name) or real(cfg))
    for seed in (0, 1):
        replay_once(table, "a", seed, trials=2)
    cfg = strategy_config(table, "a", {}, 2)
    assert seen == [study_name(cfg, 0), study_name(cfg, 1)] and seen[0] != seen[1]
    assert all(re.fullmatch(r"hpo-[0-9a-f]{12}", name) for name in seen)


def test_the_incumbent_is_the_trial_the_product_would_choose():
    """With search.forgetting_constraint, a trial beyond the forgetting margin is never the incumbent, however good
    its loss: the best grid point marked infeasible is never picked, while it is picked when feasible."""
    truth = synthetic_table().true_losses()
    best = min(truth, key=truth.__getitem__)
    feasible = [replay_once(synthetic_table(), "c", seed, trials=16).regret for seed in range(4)]
    blocked = [replay_once(synthetic_table(best), "c", seed, trials=16).regret for seed in range(4)]
    assert any(0.0 in regrets for regrets in feasible)
    assert all(0.0 not in regrets for regrets in blocked)


def test_the_oracle_pruner_stops_exactly_the_trials_that_would_not_become_the_incumbent():
    table = synthetic_table()
    run = replay_once(table, "a", seed=3, trials=16, oracle=True)
    plain = replay_once(table, "c", seed=3, trials=16)
    assert run.trials == 16
    spent = [b - a for a, b in zip([0, *run.steps], run.steps, strict=False)]
    assert set(spent) <= {25, 100}  # pruned at the first evaluation, or run in full
    regrets = [math.inf, *run.regret]
    warm = queued_warm_starts(strategy_config(table, "a", {}, 16))
    assert warm == 2 and spent[:warm] == [100] * warm  # the warm starts are never pruned (issue 22): they run in full
    for index, steps in enumerate(spent[warm:], warm):  # a full run improves the incumbent; a pruned one would not
        assert (regrets[index + 1] < regrets[index]) == (steps == 100)
    assert run.total_steps() < plain.total_steps()


def queued_warm_starts(cfg: Any) -> int:
    """How many warm starts the product queues for `cfg` (open_study): the defaults, and the strong remedies where
    the search weighs remedies and they differ."""
    from hpo_action.config.remedies import remedies_matter, strong_remedies
    from hpo_action.search.space import searched, warm_start_params

    first = warm_start_params(cfg)
    return 1 + (remedies_matter(cfg) and strong_remedies(first, searched(cfg)) != first)


class ConstantPruner:
    """An Optuna pruner that always (or never) proposes to stop: isolates the rung checks' own verdicts."""

    def __init__(self, verdict: bool) -> None:
        self.verdict = verdict

    def prune(self, study: Any, trial: Any) -> bool:
        return self.verdict


def replay_study(table: Table, monkeypatch: pytest.MonkeyPatch, prune: bool, trials: int = 6) -> tuple[Any, Replay]:
    """A defaults study (forgetting constraint on) replayed under a ConstantPruner; the study and the replay."""
    from hpo_action.search.optuna_backend import study as study_module

    monkeypatch.setattr(study_module, "make_pruner", lambda cfg: ConstantPruner(prune))
    cfg = strategy_config(table, "a", {}, trials)
    assert cfg.search.forgetting_constraint and cfg.gate.forgetting[0].margin == MARGIN
    seen: list[Any] = []
    run = replay(table, cfg, 0, 0, table.true_losses(), stop=lambda study: seen.append(study) or False)
    return seen[-1], run


def product_verdicts(table: Table, prune: bool) -> tuple[list[bool], dict[str, float], list[list[Any]]]:
    """The product's ForgettingRungs over one recorded row, fed its probe readings at each evaluation."""
    from hpo_action.search.optuna_backend.forgetting_rungs import ForgettingRungs
    from hpo_action.train.trial import ProbeReading

    readings = next(iter(table.probes.values()))
    at: list[int] = []
    rungs = ForgettingRungs(lambda: {n: ProbeReading(*r) for n, r in readings[at[-1]].items()}, {"copy": MARGIN}, 100)
    verdicts = []
    for step in (25, 50, 75, 100):
        at.append(step)
        verdicts.append(rungs.decide(prune, step))
        if verdicts[-1]:
            break
    return verdicts, rungs.forgot, rungs.log


def test_forgetting_alone_stops_no_trial_and_a_pruner_stop_beyond_the_margin_counts_it_infeasible(
    monkeypatch: pytest.MonkeyPatch,
):
    """The product's rung checks in the replay, on probes that read a drop of 0.2 (margin 0.05) from step 25 on.
    The pruner never proposes a stop: nothing is probed and every trial trains its 100 steps (mid-trial forgetting
    does not predict the end, issue 23 fourth round). The pruner proposes a stop at every evaluation: each trial is
    stopped at 25 as "forgot", with the drop's excess as its constraint (the sampler counts it infeasible), as the
    product's ForgettingRungs decides on the same readings."""
    from hpo_action.search.optuna_backend.forgetting_rungs import RUNGS_ATTR

    drops = {25: 0.2, 50: 0.2, 75: 0.3, 100: 0.4}
    table = synthetic_table(drops=drops)
    study, run = replay_study(table, monkeypatch, prune=False)
    verdicts, forgot, log = product_verdicts(table, prune=False)
    assert verdicts == [False, False, False, False] and not forgot and log == []
    assert all(t.state.name == "COMPLETE" and RUNGS_ATTR not in t.user_attrs for t in study.trials)
    assert run.total_steps() == 100 * run.trials
    table = synthetic_table(drops=drops)
    study, run = replay_study(table, monkeypatch, prune=True)
    verdicts, forgot, log = product_verdicts(table, prune=True)
    assert verdicts == [True] and forgot == {"copy": pytest.approx(0.2 - MARGIN)}
    warm = queued_warm_starts(strategy_config(table, "a", {}, 6))
    searched = [t for t in study.trials if t.number >= warm]
    assert searched and all(t.state.name == "PRUNED" for t in searched)
    for trial in searched:
        assert trial.user_attrs[RUNGS_ATTR] == log == [[25, "forgot", {"copy": 0.2}]]
        assert trial.user_attrs["steps"] == 25 and trial.constraints == {"forgetting:copy": pytest.approx(0.2 - MARGIN)}
    spent = [b - a for a, b in zip([0, *run.steps], run.steps, strict=False)]
    assert spent == [100] * warm + [25] * len(searched)  # a trial stopped beyond its margin spent its 25 steps


def test_a_trial_the_pruner_would_stop_is_spared_while_its_probes_are_within_the_margins(
    monkeypatch: pytest.MonkeyPatch,
):
    """The pruner proposes a stop at every evaluation; the probes read drops within the margin, so each trial is
    spared at 25, 50 and 75 and trains its 100 steps, as the product's ForgettingRungs decides on the same readings.
    Replayed without the rung checks (asked for explicitly), the same pruner stops every trial at step 25."""
    from hpo_action.search.optuna_backend.forgetting_rungs import RUNGS_ATTR

    table = synthetic_table(drops={25: 0.01, 50: 0.02, 75: 0.03, 100: 0.04})
    study, run = replay_study(table, monkeypatch, prune=True)
    verdicts, forgot, log = product_verdicts(table, prune=True)
    assert verdicts == [False, False, False, True] and not forgot  # the last step: the pruner's word, never acted on
    assert [entry[:2] for entry in log] == [[25, "spared"], [50, "spared"], [75, "spared"]]
    assert all(t.state.name == "COMPLETE" and t.user_attrs.get(RUNGS_ATTR, log) == log for t in study.trials)
    assert run.total_steps() == 100 * run.trials
    plain = synthetic_table(drops={25: 0.01, 50: 0.02, 75: 0.03, 100: 0.04})
    plain.probes, plain.rung_checks = None, False
    _, without = replay_study(plain, monkeypatch, prune=True)
    warm = queued_warm_starts(strategy_config(table, "a", {}, 6))
    assert without.total_steps() == 100 * warm + 25 * (without.trials - warm)


def test_the_no_learning_stop_ends_a_replayed_study_as_the_product_would(monkeypatch: pytest.MonkeyPatch):
    """With the base model's value (the probe side file's base_objective) the product's no-learning stop runs in the
    replay on each trial's own final probe. Every row learned and ends 0.1 past its margin (drop 0.15): the study
    stops after its warm starts plus MIN_AFTER_WARM_STARTS trials, with the product's message. Every row ends near
    the margin (drop 0.03, its bound 0.01 past it: not shown to forget): every trial runs. Without a base value the
    rule is off, as before the side file recorded one."""
    from hpo_action.search.optuna_backend.no_learning import STOP_ATTR
    from hpo_action.search.stopping import MIN_AFTER_WARM_STARTS

    def every_row_ends(drop: float, excess: float, base: float | None = 10.0) -> Table:
        table = synthetic_table()
        for row in table.rows.values():
            row["forgetting"] = json.dumps({"copy": excess})
        assert table.probes is not None
        table.probes = {key: {**readings, 100: {"copy": (drop, excess)}} for key, readings in table.probes.items()}
        table.base = base
        return table

    trials = 10
    warm = queued_warm_starts(strategy_config(synthetic_table(), "a", {}, trials))
    study, run = replay_study(every_row_ends(0.15, 0.1), monkeypatch, prune=False, trials=trials)
    assert run.trials == len(study.trials) == warm + MIN_AFTER_WARM_STARTS < trials
    assert "learned but forgot beyond a margin" in study.user_attrs[STOP_ATTR]
    study, run = replay_study(every_row_ends(0.03, 0.01), monkeypatch, prune=False, trials=trials)
    assert run.trials == trials and STOP_ATTR not in study.user_attrs
    study, run = replay_study(every_row_ends(0.15, 0.1, base=None), monkeypatch, prune=False, trials=trials)
    assert run.trials == trials and STOP_ATTR not in study.user_attrs


def test_a_table_without_probe_readings_is_refused_under_the_forgetting_constraint(tmp_path: Path):
    table = synthetic_table()
    table.probes = None
    with pytest.raises(TableMismatch, match="no forgetting probe readings"):
        replay_once(table, "a", seed=0, trials=2)
    unpruned = strategy_config(table, "c", {"pruner": "none"}, 2)  # no pruner: no rung checks, nothing to refuse
    assert math.isfinite(replay(table, unpruned, 0, 0, table.true_losses()).final_regret())
    for suffix in (".json", ".parquet"):
        shutil.copy(RESULTS / f"curves_quickstart{suffix}", tmp_path / f"curves_quickstart{suffix}")
    with pytest.raises(TableMismatch, match=r"curves\.py --task quickstart --probes.*--no-rung-checks"):
        Table.load("quickstart", tmp_path)
    assert Table.load("quickstart", tmp_path, rung_checks=False).probes is None
    done = subprocess.run(
        [sys.executable, "benchmarks/hpo_efficiency.py", "--quick", "--tables", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "--no-rung-checks" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_steps_to_stay_within_epsilon_ignore_a_first_touch():
    left_again = Replay(steps=[100, 200, 300, 400], regret=[0.5, 0.05, 0.5, 0.05], trials=4)
    assert left_again.steps_to(0.1) == 200
    assert left_again.steps_to_stay(0.1) == (400.0, True)
    never_stays = Replay(steps=[100, 200, 300], regret=[0.05, 0.05, 0.5], trials=3)
    assert never_stays.steps_to(0.1) == 100
    assert never_stays.steps_to_stay(0.1) == (300.0, False)  # censored at the study's budget


def test_the_kaplan_meier_median_matches_scipy():
    from scipy.stats import CensoredData, ecdf

    rng = random.Random(7)
    for _ in range(20):
        n = rng.randint(5, 60)
        times = [float(rng.choice(range(25, 2000, 25))) for _ in range(n)]
        events = [rng.random() < 0.7 for _ in range(n)]
        data = CensoredData.right_censored(times, [not e for e in events])
        sf = ecdf(data).sf
        below = [q for q, p in zip(sf.quantiles, sf.probabilities, strict=True) if p <= 0.5 + 1e-12]
        expected = float(below[0]) if below else math.inf
        assert km_median(times, events) == expected
    summary = km_summary([100.0, 200.0, 300.0, 400.0], [True, True, False, False])
    assert summary["median"] == 200.0 and summary["events"] == 2 and summary["low"] <= 200.0 <= summary["high"]


def test_a_stale_table_is_refused_with_exit_2_and_one_line():
    done = subprocess.run(
        [sys.executable, "benchmarks/hpo_efficiency.py", "--tasks", "flat60", "--seeds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "curves_flat60.json: stale table" in lines[0] and "--allow-stale" in lines[0]
    stale = Table.load("flat60", allow_stale=True)  # asked for explicitly, it replays as recorded
    assert stale.task == "flat60" and stale.rows


def test_a_table_whose_config_differs_from_the_code_is_refused(tmp_path: Path):
    copy_table(tmp_path)
    Table.load("quickstart", tmp_path)  # the committed table matches today's code
    manifest = json.loads((tmp_path / "curves_quickstart.json").read_text())
    manifest["config"]["search"]["budget"]["max_steps"] = 60
    (tmp_path / "curves_quickstart.json").write_text(json.dumps(manifest))
    with pytest.raises(TableMismatch, match=r"search\.budget\.max_steps"):
        Table.load("quickstart", tmp_path)
    done = subprocess.run(
        [sys.executable, "benchmarks/hpo_efficiency.py", "--quick", "--tables", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "does not match the code under test" in done.stderr


def test_the_committed_efficiency_results_were_replayed_from_the_committed_tables():
    """benchmarks/results/hpo_efficiency.json keeps the keys issue 23 names, and its headline and league carry the
    pins of the tables committed beside them (commit, rows, seeds, model and data hashes, probe side files): a table
    rebuilt without rerunning the results fails here."""
    result = json.loads((RESULTS / "hpo_efficiency.json").read_text())
    keys = ("ratio_vs_random", "ratio_vs_tpe_no_pruning", "seeds", "stays_within_eps", "oracle_fraction", "league")
    assert all(key in result for key in (*keys, "manifest")), sorted(result)
    for task, pins in result["manifest"].items():
        assert pins == manifest_pins(task), f"hpo_efficiency.json's {task} headline: rerun benchmarks/hpo_efficiency.py"
    for task, pins in result["league"]["manifest"].items():
        assert pins == manifest_pins(task), f"hpo_efficiency.json's {task} league: rerun benchmarks/league.py"


@pytest.mark.slow
@pytest.mark.parametrize("task", ["quickstart", "flat"])
def test_the_table_matches_todays_trial_loop(monkeypatch: pytest.MonkeyPatch, task: str):
    """The drift test: two rows of each committed table (its best configuration and its median one), retrained now
    with today's trial loop on the table's thread count, up to step 50 (stopped there as a pruned trial stops),
    agree with the recorded curve within DRIFT_TOLERANCE. A change of the trial loop, the demo model or the data
    that moves the curves fails here (on the machine that built the table the rows reproduce bit for bit). The
    forgetting probes read at steps 25 and 50 (what the rung checks see) agree with the probe side file's within
    PROBE_TOLERANCE on the drop, and the base model's value the replay's no-learning stop reads with the side
    file's."""
    from hpo_action.search.optuna_backend.no_learning import base_params

    table = Table.load(task)
    manifest = json.loads((RESULTS / f"curves_{task}.json").read_text())
    monkeypatch.setenv("OMP_NUM_THREADS", str(manifest["torch_threads"]))
    truth = table.true_losses()
    ranked = sorted(table.points(), key=truth.__getitem__)
    cfg = task_config(TASKS[task])
    runner = session_runner(cfg)
    assert table.probes is not None
    for point in (ranked[0], ranked[len(ranked) // 2]):
        recorded = table.rows[(*point, 0)]
        params = dict(zip(table.grid, point, strict=True))
        row = run_one(runner, cfg, params, seed=0, stop_at=50, probes=True)
        now = dict(zip(row["steps"], row["values"], strict=True))
        for step, value in zip(recorded["steps"], recorded["values"], strict=True):
            if step <= 50:
                assert now[step] == pytest.approx(value, rel=DRIFT_TOLERANCE), (params, step, manifest["commit"])
        recorded_probes = table.probes[(*point, 0)]
        for step, sets in json.loads(row["probes"]):
            for name, (drop, _) in sets.items():
                assert drop == pytest.approx(recorded_probes[step][name][0], abs=PROBE_TOLERANCE), (params, step, name)
    base = runner.base_metrics(base_params(cfg))[cfg.search.objective.metric]
    assert base == pytest.approx(table.base, rel=DRIFT_TOLERANCE)  # what the replay's no-learning stop compares with


def test_epsilon_is_the_seed_sd_pooled_over_the_best_configurations():
    import numpy as np
    from scipy.stats import chi2

    table = synthetic_table()
    rng = random.Random(3)
    rows = {}
    for key, row in table.rows.items():
        for seed in (0, 1, 2):
            rows[(*key[:-1], seed)] = {**row, "final": row["final"] + rng.gauss(0, 0.05)}
    table = Table("synthetic", table.grid, [0, 1, 2], rows, table.config)
    truth = table.true_losses()
    top = sorted(truth, key=truth.__getitem__)[: len(truth) // 4]
    finals = np.array([[rows[(*p, s)]["final"] for s in (0, 1, 2)] for p in top])
    variance = finals.var(axis=1, ddof=1).mean()
    pooled = table.pooled_seed_sd()
    assert pooled["configurations"] == len(top) and pooled["df"] == 2 * len(top)
    assert pooled["epsilon"] == pytest.approx(math.sqrt(variance))
    assert pooled["low"] == pytest.approx(math.sqrt(pooled["df"] * variance / chi2.isf(0.025, pooled["df"])))
    assert pooled["low"] < pooled["epsilon"] < pooled["high"]


def test_another_major_version_of_a_training_library_is_refused_a_minor_one_left_to_the_drift_test(tmp_path: Path):
    copy_table(tmp_path)
    manifest = json.loads((tmp_path / "curves_quickstart.json").read_text())
    major = int(manifest["versions"]["transformers"].split(".")[0])
    manifest["versions"]["transformers"] = f"{major}.0.0"
    (tmp_path / "curves_quickstart.json").write_text(json.dumps(manifest))
    Table.load("quickstart", tmp_path)
    manifest["versions"]["transformers"] = f"{major - 1}.9.0"
    (tmp_path / "curves_quickstart.json").write_text(json.dumps(manifest))
    with pytest.raises(TableMismatch, match=r"transformers"):
        Table.load("quickstart", tmp_path)


def test_an_option_added_since_the_table_is_ignored_but_a_new_search_parameter_is_not(tmp_path: Path):
    """A config option that did not exist when the table was built (a new key at its default) does not void the
    table, and the gate's settings, which shape no curve, are neither compared nor replayed (today's are); a
    parameter added to the search space is a different search and is refused."""
    copy_table(tmp_path)
    manifest = json.loads((tmp_path / "curves_quickstart.json").read_text())
    newest_option = sorted(manifest["config"]["train"])[-1]
    del manifest["config"]["train"][newest_option]
    manifest["config"]["gate"] = {"alpha": 0.5, "confidence": 0.95}  # an option the gate has since dropped
    (tmp_path / "curves_quickstart.json").write_text(json.dumps(manifest))
    table = Table.load("quickstart", tmp_path)
    assert strategy_config(table, "a", {}, 4).gate.alpha == task_config(TASKS["quickstart"]).gate.alpha
    del manifest["config"]["search"]["space"]["learning_rate"]
    (tmp_path / "curves_quickstart.json").write_text(json.dumps(manifest))
    with pytest.raises(TableMismatch, match=r"search\.space"):
        Table.load("quickstart", tmp_path)


def test_extra_seeds_enter_the_truth_and_epsilon_pools_the_configurations_that_have_them():
    """curves.py --add-seeds gives the best configurations more training seeds: their truth is the mean over all of
    them, and ε pools the seed variance over exactly those configurations on Σ(n − 1) degrees of freedom."""
    import numpy as np
    from scipy.stats import chi2

    table = synthetic_table()
    rng = random.Random(5)
    truth = table.true_losses()
    best = sorted(truth, key=truth.__getitem__)[:4]
    rows = {}
    for key, row in table.rows.items():
        for seed in range(5 if key[:-1] in best else 3):
            rows[(*key[:-1], seed)] = {**row, "final": row["final"] + rng.gauss(0, 0.05)}
    table = Table("synthetic", table.grid, [0, 1, 2], rows, table.config)
    finals = {p: np.array([rows[(*p, s)]["final"] for s in range(5)]) for p in best}
    assert table.seeds_of(best[0]) == [0, 1, 2, 3, 4]
    assert table.true_losses()[best[0]] == pytest.approx(finals[best[0]].mean())
    pooled = table.pooled_seed_sd()
    variance = np.mean([f.var(ddof=1) for f in finals.values()])
    assert pooled["configurations"] == 4 and pooled["df"] == 16
    assert pooled["epsilon"] == pytest.approx(math.sqrt(variance))
    assert pooled["high"] == pytest.approx(math.sqrt(16 * variance / chi2.ppf(0.025, 16)))
