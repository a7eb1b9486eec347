"""Issue 22: a search whose every trial forgets beyond the forgetting test still ends in a gate decision: the trial
closest to feasible is judged on the full sets, labelled as such in summary.json, the report line and gate.json."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hpo_action.config import parse_config
from hpo_action.search.optuna_backend.duplicates import is_discarded
from hpo_action.search.optuna_backend.finalist import SHORTFALL_ATTR, closest_to_feasible, judged_trial
from hpo_action.search.optuna_backend.forgetting_rungs import RUNGS_ATTR, ForgettingRungs
from hpo_action.search.optuna_backend.pruning import FirstObjectivePruning
from hpo_action.search.selection import shortfall
from hpo_action.train.trial import ProbeReading


def _study(shortfalls: list[float]) -> optuna.Study:
    """A single-objective study under constraints whose completed trials missed the test by `shortfalls`."""
    study = optuna.create_study()
    for number, missed in enumerate(shortfalls):
        trial = optuna.trial.create_trial(
            value=float(number),
            params={},
            distributions={},
            user_attrs={SHORTFALL_ATTR: missed},
            system_attrs={"constraints:forgetting:copy": missed},  # what Trial.set_constraint stores
        )
        study.add_trial(trial)
    return study


def test_shortfall_compares_sets_in_units_of_their_margins():
    assert shortfall({"copy": 0.1, "cap": 0.3}, {"copy": 0.05, "cap": 0.3}) == pytest.approx(2.0)
    assert shortfall({"copy": -0.01}, {"copy": 0.05}) == pytest.approx(-0.2)
    assert shortfall({"lm": 0.02}, {}) == pytest.approx(0.02)  # no margin: the metric's own units


def test_with_no_feasible_trial_the_closest_is_judged_and_a_feasible_one_always_wins():
    study = _study([0.8, 0.3, 0.5])
    assert closest_to_feasible(study).number == 1
    assert judged_trial(study).number == 1
    feasible = _study([0.8, 0.3, -0.1])
    assert closest_to_feasible(feasible) is None
    assert judged_trial(feasible).number == 2


@pytest.mark.slow
def test_a_run_whose_every_trial_forgets_ends_in_a_gate_decision_on_the_closest_trial(tmp_path: Path):
    """A real run on the tiny model: a rate that forgets the copy skill and a margin no trial can meet. Before the
    fallback it ended 'no completed trial to evaluate' (exit 1); now the gate judges the closest trial."""
    from rich.console import Console

    from hpo_action.pipeline import run
    from hpo_action.search.summary import RunSummary

    from .helpers import small_config

    raw = small_config(tmp_path, train={"learning_rate": 0.05, "lora_r": 16})
    raw["search"].update(forgetting_constraint=True, forgetting_probe_size=32, n_trials=2, pruner="median")
    raw["search"]["space"] = {"lora_r": {"choices": [8, 16]}}
    raw["gate"]["forgetting"][0]["margin"] = 0.01
    console = Console(record=True, width=200)
    decision = run(parse_config(raw, base_dir=tmp_path), console=console)
    out = tmp_path / "out"
    summary = RunSummary.from_json(json.loads((out / "summary.json").read_text()))
    assert summary.selection is not None and summary.selection.feasible == 0
    completed = [t for t in summary.trials if t.state == "COMPLETE"]
    closest = min(completed, key=lambda t: (max(e / 0.01 for e in t.forgetting.values()), t.number))
    assert summary.best is not None and summary.best.number == closest.number
    assert f"trial #{closest.number}, the closest to feasible" in summary.selection.fallback
    gate = json.loads((out / "gate.json").read_text())
    assert gate["decision"] in ("reject", "inconclusive") and decision.decision == gate["decision"]
    assert gate["reasons"][0] == summary.selection.fallback
    assert "no trial was feasible at search" in console.export_text()
    report = (out / "report.md").read_text()
    assert "every trial forgot beyond its margin at search: the closest was gated" in report  # the doctor
    assert summary.selection.fallback in report
    assert (out / "best").is_dir() and len([p for p in (out / "trials").iterdir() if p.name.isdigit()]) == 1
    # The sampled trial forgot too, but the pruner never proposed to stop it, so nothing was probed mid-trial and
    # it ran to its end: forgetting alone stops no trial (issue 23 fourth round); its end-of-trial probe made it
    # infeasible, and the closest of the two completed trials was judged.
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{out / 'study.db'}")
    (sampled,) = [t for t in study.trials[1:] if not is_discarded(t)]  # a repeat of the warm start is asked again
    assert sampled.state == optuna.trial.TrialState.COMPLETE and sampled.user_attrs["steps"] == 6
    assert RUNGS_ATTR not in sampled.user_attrs and len(completed) == 2


def _readings(drop: float, excess: float) -> dict[str, ProbeReading]:
    return {"copy": ProbeReading(drop=drop, excess=excess)}


class _Probes:
    """What TrialRunner.probe_now returns, counted: the rung checks must probe only where a decision can change."""

    def __init__(self, readings: dict[str, ProbeReading]) -> None:
        self.readings, self.calls = readings, 0

    def __call__(self) -> dict[str, ProbeReading]:
        self.calls += 1
        return self.readings


def _median_study() -> optuna.Study:
    """A real study whose median pruner stops any trial worse than its one completed trial at step 3."""
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    done = study.ask()
    done.report(0.1, 3)
    done.report(0.05, 6)
    study.tell(done, 0.05)
    return study


def test_the_pruner_spares_a_slow_trial_that_keeps_the_skills_and_never_stops_one_for_forgetting_alone():
    """Issue 22 item 2(a): on eval_loss alone the pruner stops the remedy-heavy trial that keeps the skills; with
    the rung checks it is spared. A trial the pruner leaves running is never probed nor stopped mid-trial, even one
    that forgets: mid-trial forgetting does not predict the end (issue 23 fourth round). A trial the pruner stops
    while beyond a margin stays stopped, with its excesses as constraints."""
    study = _median_study()
    assert FirstObjectivePruning(study.ask(), None).report(1.0, 3)  # the pruner alone: stopped on its loss
    keeps = _Probes(_readings(drop=0.0, excess=-0.01))
    rungs = ForgettingRungs(keeps, {"copy": 0.05}, max_steps=6)
    assert not FirstObjectivePruning(study.ask(), None, rungs=rungs).report(1.0, 3)
    assert rungs.log == [[3, "spared", {"copy": 0.0}]] and keeps.calls == 1
    forgets = _Probes(_readings(drop=0.2, excess=0.1))
    rungs = ForgettingRungs(forgets, {"copy": 0.05}, max_steps=10)
    pruning = FirstObjectivePruning(study.ask(), None, rungs=rungs)
    assert not pruning.report(0.01, 3) and not pruning.report(0.01, 5) and not pruning.report(0.01, 8)
    assert forgets.calls == 0 and rungs.log == []  # the best loss: the pruner never asks, nothing is probed
    rungs = ForgettingRungs(forgets, {"copy": 0.05}, max_steps=10)
    trial = study.ask()
    assert FirstObjectivePruning(trial, None, rungs=rungs).report(1.0, 6)  # the pruner stops it, and it forgot
    assert rungs.log == [[6, "forgot", {"copy": 0.2}]]
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    (stopped,) = [t for t in study.trials if t.number == trial.number]
    assert stopped.constraints == {"forgetting:copy": 0.1}  # TPE counts it infeasible, not a good pruned trial


def test_rung_checks_spare_a_probe_within_its_margin_and_leave_the_last_evaluation_to_the_pruner():
    study = _median_study()
    unclear = _Probes(_readings(drop=0.03, excess=0.01))  # within the margin, not yet shown by the gate's test
    rungs = ForgettingRungs(unclear, {"copy": 0.05}, max_steps=6)
    assert not FirstObjectivePruning(study.ask(), None, rungs=rungs).report(1.0, 3)
    assert rungs.log == [[3, "spared", {"copy": 0.03}]] and rungs.forgot == {}
    last = _Probes(_readings(drop=0.5, excess=0.4))
    rungs = ForgettingRungs(last, {"copy": 0.05}, max_steps=3)
    assert FirstObjectivePruning(study.ask(), None, rungs=rungs).report(1.0, 3)  # the pruner's own verdict
    assert last.calls == 0 and rungs.log == []


class _Resumed(_Probes):
    """probe_now of a resumed trial: nothing to read while its evaluations before the checkpoint are replayed
    (the first `replayed` calls), then the readings of the model it trains."""

    def __init__(self, readings: dict[str, ProbeReading], replayed: int) -> None:
        super().__init__(readings)
        self.replayed = replayed

    def __call__(self) -> dict[str, ProbeReading]:
        self.calls += 1
        return {} if self.calls <= self.replayed else self.readings


def test_a_resumed_trial_has_its_rung_check_on_the_model_it_trains_not_on_a_replayed_evaluation():
    """A resumed trial's evaluations before its checkpoint are reported again before the checkpoint is loaded: a
    probe there cannot be read. The pruner's proposal to stop waits for the next evaluation the trial trains to,
    where the probes decide; before, a replayed evaluation probed the fresh adapter and spared the trial."""
    study = _median_study()
    forgot = _Resumed(_readings(drop=0.2, excess=0.1), replayed=1)
    rungs = ForgettingRungs(forgot, {"copy": 0.05}, max_steps=12)
    pruning = FirstObjectivePruning(study.ask(), None, rungs=rungs)
    assert not pruning.report(1.0, 3) and rungs.log == []  # replayed: the pruner proposes a stop, nothing is read
    assert pruning.report(1.0, 6)  # the first evaluation it trains to: the probes are read, and it forgot
    assert rungs.log == [[6, "forgot", {"copy": 0.2}]] and forgot.calls == 2


def test_the_ray_backend_judges_the_closest_trial_too(tmp_path: Path):
    """The same rule whichever backend ran the study: Ray's summary names the closest trial when none is feasible
    (its results faked here: Ray is an optional extra; the rule reads only the typed records)."""
    from types import SimpleNamespace

    from hpo_action.layout import RunLayout
    from hpo_action.search.ray_backend import _summary
    from hpo_action.search.summary import TrialRecord

    from .helpers import small_config

    raw = small_config(tmp_path, search={"forgetting_constraint": True})
    cfg = parse_config(raw, base_dir=tmp_path)
    margin = cfg.gate.forgetting[0].margin
    records = [
        TrialRecord(number=n, state="COMPLETE", value=v, steps=6, seconds=1.0, forgetting={"copy": e})
        for n, v, e in ((0, 0.1, 3 * margin), (1, 0.2, margin), (2, 0.05, 5 * margin))
    ]
    finals = {n: SimpleNamespace(metrics={"record": json.dumps({"params": {}})}, checkpoint=None) for n in range(3)}
    (tmp_path / "out").mkdir()
    summary = _summary(cfg, RunLayout(tmp_path / "out"), records, finals, "ray", 1.0)
    assert summary.best is not None and summary.best.number == 1
    assert summary.selection.fallback.startswith("no trial was feasible at search")
    assert "trial #1, the closest to feasible (its worst probe missed by 1 of its margin)" in summary.selection.fallback
