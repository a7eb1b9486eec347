"""Multi-objective search: quality against forgetting, pruned on the first objective, the finalist by one rule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest

from hpo_action.cli import main
from hpo_action.config import parse_config
from hpo_action.errors import ConfigError
from hpo_action.pipeline import search
from hpo_action.report.markdown import run_markdown
from hpo_action.report.tables import pareto_table, trials_table
from hpo_action.search.naming import storage_url, study_name
from hpo_action.search.optuna_backend.duplicates import is_discarded
from hpo_action.search.optuna_backend.pruning import COMPANION_SUFFIX, FirstObjectivePruning, companion_study
from hpo_action.search.optuna_backend.records import trial_records
from hpo_action.search.optuna_backend.study import open_study
from hpo_action.search.summary import RunSummary, Selection
from hpo_action.ship.card import render_card

from .helpers import error_line, promoted_decision, sample_summary, small_config, write_config

OBJECTIVES = [{"metric": "eval_loss"}, {"metric": "forgetting"}]
COPY = {"name": "copy", "data": "forget_copy.jsonl", "metric": "exact_match", "margin": 0.05}


def _raw(tmp_path: Path, **search) -> dict:
    raw = small_config(tmp_path, search={"objectives": OBJECTIVES, "forgetting_probe_size": 64, **search})
    raw["gate"]["forgetting"] = [COPY]
    return raw


@pytest.mark.slow
def test_multi_objective_study_resumes_and_picks_the_finalist_by_its_rule(tmp_path: Path):
    gentle = {"learning_rate": {"low": 1e-4, "high": 1e-3, "log": True}, "lora_r": {"choices": [8, 16]}}
    cfg = parse_config(_raw(tmp_path, n_trials=2, space=gentle), base_dir=tmp_path)  # rates that keep copy
    summary = search(cfg)
    storage = storage_url(cfg)
    study = optuna.load_study(study_name=study_name(cfg), storage=storage)
    companion = optuna.load_study(study_name=study_name(cfg) + COMPANION_SUFFIX, storage=storage)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    trials = _counted(study)
    assert len(trials) == len(companion.trials) == 2
    states = [t.state.name for t in trials]
    assert "FAIL" not in states and "COMPLETE" in states, [t.user_attrs.get("error") for t in trials]
    assert all(t.intermediate_values for t in companion.trials)  # the pruner saw every trial's first objective
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    for trial in completed:
        drop = trial.user_attrs["forgetting_drop"]["copy"]
        assert trial.values == [trial.user_attrs["metrics"]["eval_loss"], drop]
    by_number = {record.number: record for record in summary.trials}
    for trial in trials:  # every trial shows the first objective it reached, a pruned one included
        assert by_number[trial.number].value is not None

    qualifying = [t for t in completed if t.user_attrs["forgetting_excess"]["copy"] <= 0]
    assert qualifying  # 6 steps at these rates keep copy: the rule has trials to choose from
    expected = min(qualifying, key=lambda t: (t.values[0], t.number))
    assert summary.best is not None and summary.best.number == expected.number
    saved = json.loads((Path(cfg.output.dir) / "summary.json").read_text())
    assert saved["selection"]["objectives"] == [
        {"metric": "eval_loss", "direction": "minimize"},
        {"metric": "forgetting", "direction": "minimize"},
    ]
    assert "within its margin" in saved["selection"]["rule"]
    assert saved["selection"]["pareto_front"] == sorted(t.number for t in study.best_trials)
    assert saved["selection"]["pareto_front"]  # at least one completed trial is on it
    assert (Path(cfg.output.dir) / "plots" / "pareto_front.png").is_file()

    search(cfg, extra_trials=1)  # resumes the same two studies
    study = optuna.load_study(study_name=study_name(cfg), storage=storage)
    companion = optuna.load_study(study_name=study_name(cfg) + COMPANION_SUFFIX, storage=storage)
    assert len(_counted(study)) == len(companion.trials) == 3
    assert [t.state.name for t in _counted(study)].count("FAIL") == 0
    assert all(t.state.is_finished() for t in (*study.trials, *companion.trials))


def _counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials without discarded repeats (which never reach the pruner's companion study)."""
    return [t for t in study.trials if not is_discarded(t)]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"objective": {"metric": "eval_loss"}}, {"objectives": OBJECTIVES}),
        ({"objectives": OBJECTIVES}, {"objectives": [{"metric": "eval_loss"}, {"metric": "forgetting:copy"}]}),
        ({"objectives": OBJECTIVES}, {"objectives": []}),
    ],
    ids=["one-to-several", "another-forgetting-objective", "several-to-one"],
)
@pytest.mark.parametrize("command", ["search", "run"])
def test_a_study_made_for_other_objectives_is_refused_before_anything_trains(
    tmp_path: Path, capsys, before: dict, after: dict, command: str
):
    raw = _raw(tmp_path)
    raw["search"].pop("objectives")
    raw["search"].update(before)
    open_study(parse_config(raw, base_dir=tmp_path))  # the output folder's study, made for `before`
    raw["search"].update(after)
    with pytest.raises(SystemExit) as exit_info:
        main([command, "-c", str(write_config(tmp_path, raw)), "--workers", "0"])
    assert exit_info.value.code == 2
    line = error_line(capsys.readouterr().err)
    assert "search.objective" in line and "a study keeps its objectives" in line and "--output" in line
    cfg = parse_config(raw, base_dir=tmp_path)
    trials = optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg)).trials
    assert [t.state.name for t in trials] in ([], ["WAITING"])  # nothing ran (at most the warm start is queued)
    assert not (tmp_path / "out" / "trials").exists()
    with pytest.raises(ConfigError, match="a study keeps its objectives"):  # the same refusal where studies open
        open_study(cfg)


def test_a_pruned_multi_objective_trial_shows_the_value_it_reached(tmp_path: Path):
    cfg = parse_config(_raw(tmp_path), base_dir=tmp_path)
    study = open_study(cfg)
    trial = study.ask()
    pruning = FirstObjectivePruning(trial, companion_study(study, cfg))  # what the objective does
    pruning.report(0.75, 3)
    pruning.finish("PRUNED")
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    (record,) = trial_records(study)
    assert (record.state, record.value, record.curve) == ("PRUNED", 0.75, [[3, 0.75]])
    summary = dataclasses.replace(sample_summary(), trials=(record,), best=None)
    assert trials_table(summary).rows[0][1:3] == ("pruned", "0.75 (pruned)")


@pytest.mark.parametrize(
    ("search_section", "forgetting", "expected"),
    [
        ({"objectives": [{"metric": "eval_loss"}]}, [COPY], "two or more"),
        ({"objectives": [{"metric": "forgetting"}, {"metric": "eval_loss"}]}, [COPY], "the first must be"),
        ({"objectives": OBJECTIVES}, [], "needs a gate.forgetting set"),
        ({"objectives": [{"metric": "eval_loss"}, {"metric": "forgetting:math"}]}, [COPY], "named 'math'"),
        ({"objectives": OBJECTIVES, "objective": {"metric": "eval_perplexity"}}, [COPY], "objectives[0] differ"),
        ({"space": {"replay_ratio": {"low": 0.0, "high": 0.5}}}, [COPY], "needs data.replay"),
    ],
)
def test_bad_remedy_settings_are_config_errors(tmp_path: Path, search_section: dict, forgetting: list, expected: str):
    raw = small_config(tmp_path)
    raw["search"].update(search_section)
    raw["gate"]["forgetting"] = forgetting
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        parse_config(raw, base_dir=tmp_path)


def _two_objective_summary() -> RunSummary:
    """sample_summary() as a two-objective study: trial 1 kept copy (chosen), trial 2 fit better and forgot."""
    base = sample_summary()
    kept, forgot = {"copy": 0.0}, {"copy": 0.6}
    trials = (
        dataclasses.replace(base.trials[1], values=[0.45, 0.0], forgetting={"copy": -0.05}, forgetting_drop=kept),
        dataclasses.replace(
            base.trials[1], number=2, values=[0.2, 0.6], forgetting={"copy": 0.55}, forgetting_drop=forgot
        ),
    )
    best = dataclasses.replace(base.best, forgetting_drop=kept, values=[0.45, 0.0])
    selection = Selection(
        [{"metric": "eval_loss", "direction": "minimize"}, {"metric": "forgetting", "direction": "minimize"}],
        "the best eval_loss (minimize) among completed trials whose forgetting on every probe set is within its margin",
        [1, 2],
    )
    return dataclasses.replace(base, trials=trials, best=best, selection=selection)


def test_pareto_table_and_tradeoff_reach_the_job_summary():
    summary = _two_objective_summary()
    assert RunSummary.from_json(json.loads(json.dumps(summary.to_json()))) == summary
    table = pareto_table(summary)
    assert table is not None and table.columns[:5] == ("#", "eval_loss", "forgetting", "copy delta", "within margin")
    assert [row[0] for row in table.rows] == ["1 *", "2"]
    assert table.rows[1][3:5] == ("-0.6", "✗")
    markdown = run_markdown(summary, promoted_decision())
    assert "Pareto front (2 trials)" in markdown
    assert "trade-off: trial #1, eval_loss 0.4568; forgetting probes: copy +0" in markdown
    assert pareto_table(sample_summary()) is None  # one objective: no Pareto table


def test_model_card_shows_the_tradeoff_and_the_pareto_front():
    cfg = parse_config({"model": {"name": "org/base-model"}, "data": {"train": "t.jsonl", "test": "org/ds"}})
    plots = ["pareto_front.png"]
    text = render_card(cfg, _two_objective_summary(), promoted_decision(), plots, "me/adapter", champion_version=None)
    assert "chosen as the best eval_loss (minimize) among completed trials whose forgetting" in text
    assert "trade-off: trial #1, eval_loss 0.4568; forgetting probes: copy +0" in text
    assert "| 2 | 0.2 | 0.6 | -0.6 | ✗ |" in text
    assert "![Pareto front (quality against forgetting)](plots/pareto_front.png)" in text
