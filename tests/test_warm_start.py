"""The warm start: trial 0 trains the train defaults, is marked as such in the study, and the report says how far
the search got beyond it ("best trial #N beats the warm start by X")."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import optuna
import pytest

from hpo_action.config import parse_config
from hpo_action.report.markdown import run_markdown
from hpo_action.report.tables import warm_start_line
from hpo_action.search.naming import storage_url, study_name
from hpo_action.search.space import DEFAULTS, warm_start_kind
from hpo_action.search.summary import TrialRecord

from .helpers import sample_summary, small_config


def _summary(warm: TrialRecord, best_number: int = 1, best_value: float = 0.4567891, direction: str = "minimize"):
    summary = sample_summary()
    best = dataclasses.replace(summary.best, number=best_number, value=best_value)
    return dataclasses.replace(summary, trials=(warm, *summary.trials[1:]), best=best, objective_direction=direction)


def test_the_line_gives_the_gain_over_the_warm_start_in_the_objectives_direction():
    warm = TrialRecord(0, "COMPLETE", 0.6067891, 6, 2.0, {"lora_r": 8}, warm_start=DEFAULTS)
    line = warm_start_line(_summary(warm))
    gain = "by 0.15 eval_loss (0.4568 against 0.6068)"
    assert line == f"best trial #1 beats the warm start (#0, the train defaults) {gain}"
    higher = dataclasses.replace(warm, value=0.25)
    line = warm_start_line(_summary(higher, best_value=0.75, direction="maximize"))
    assert line is not None and "beats the warm start (#0, the train defaults) by 0.5 eval_loss" in line


def test_a_warm_start_that_won_or_was_set_aside_is_said_so():
    won = TrialRecord(0, "COMPLETE", 0.4, 6, 2.0, {}, warm_start=DEFAULTS)
    assert "is the best trial: the search found nothing better" in warm_start_line(_summary(won, best_number=0))
    forgot = dataclasses.replace(won, value=0.3, forgetting={"copy": 0.12})
    line = warm_start_line(_summary(forgot))
    assert line is not None and line.endswith("it failed the forgetting test on the copy probes")
    assert "beats" not in line  # a lower loss that forgot is no gain to report
    pruned = dataclasses.replace(won, state="PRUNED", value=0.3)
    assert warm_start_line(_summary(pruned)).endswith("(#0, 0.3 (pruned)): it pruned")


def test_no_line_without_a_warm_start_or_with_several_objectives():
    assert warm_start_line(sample_summary()) is None  # trial 0 was sampled
    assert "warm start" not in run_markdown(sample_summary(), None)


def test_studies_made_before_the_kinds_count_their_warm_start_as_the_defaults():
    assert warm_start_kind({"warm_start": True}) == DEFAULTS
    assert warm_start_kind({"warm_start": "strong remedies"}) == "strong remedies"
    assert warm_start_kind({}) == ""


@pytest.mark.slow
def test_a_real_study_marks_trial_0_and_the_report_measures_the_search_against_it(tmp_path: Path):
    from hpo_action.pipeline import search

    cfg = parse_config(small_config(tmp_path), base_dir=tmp_path)
    summary = search(cfg)
    study = optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg))
    assert [r.warm_start for r in summary.trials] == [DEFAULTS, "", ""]
    warm = study.trials[0]
    line = warm_start_line(summary)
    assert line is not None and line in run_markdown(summary, None)
    if summary.best.number == 0:
        assert line.startswith("the warm start (trial #0, the train defaults) is the best trial")
    else:
        gain = warm.value - summary.best.value
        assert gain > 0 and f"beats the warm start (#0, the train defaults) by {gain:.4g} eval_loss" in line


def test_a_warm_start_reports_to_the_pruner_but_is_never_stopped():
    from hpo_action.search.optuna_backend.pruning import FirstObjectivePruning

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=1.0))  # stops any value above 1
    sampled, warm = study.ask(), study.ask()
    assert FirstObjectivePruning(sampled, None).report(2.0, 5) is True
    pruning = FirstObjectivePruning(warm, None, exempt=True)
    assert pruning.report(2.0, 5) is False and warm.should_prune()  # the pruner would have stopped it
    assert study.trials[1].intermediate_values == {5: 2.0}
