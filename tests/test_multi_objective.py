"""Multi-objective search: quality against forgetting, pruned on the first objective, the finalist by one rule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pytest

from hpo_action.config import parse_config
from hpo_action.errors import ConfigError
from hpo_action.pipeline import search
from hpo_action.report.markdown import run_markdown
from hpo_action.report.tables import pareto_table
from hpo_action.search.pruning import COMPANION_SUFFIX
from hpo_action.search.storage import storage_url, study_name
from hpo_action.search.summary import RunSummary, Selection
from hpo_action.ship.card import render_card

from .helpers import promoted_decision, sample_summary, small_config

OBJECTIVES = [{"metric": "eval_loss"}, {"metric": "forgetting"}]
COPY = {"name": "copy", "data": "forget_copy.jsonl", "metric": "exact_match", "margin": 0.05}


def _raw(tmp_path: Path, **search) -> dict:
    raw = small_config(tmp_path, search={"objectives": OBJECTIVES, "forgetting_probe_size": 16, **search})
    raw["gate"]["forgetting"] = [COPY]
    return raw


@pytest.mark.slow
def test_multi_objective_study_resumes_and_picks_the_finalist_by_its_rule(tmp_path: Path):
    cfg = parse_config(_raw(tmp_path, n_trials=3), base_dir=tmp_path)
    summary = search(cfg)
    storage = storage_url(cfg)
    study = optuna.load_study(study_name=study_name(cfg), storage=storage)
    companion = optuna.load_study(study_name=study_name(cfg) + COMPANION_SUFFIX, storage=storage)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert len(study.trials) == len(companion.trials) == 3
    assert all(t.intermediate_values for t in companion.trials)  # the pruner saw every trial's first objective
    for trial in study.trials:
        if trial.state.name == "COMPLETE":
            drop = trial.user_attrs["forgetting_drop"]["copy"]
            assert trial.values == [trial.user_attrs["metrics"]["eval_loss"], drop]

    qualifying = [
        t for t in study.trials if t.state.name == "COMPLETE" and t.user_attrs["forgetting_excess"]["copy"] <= 0
    ]
    expected = min(qualifying, key=lambda t: t.values[0]) if qualifying else None
    assert (summary.best.number if summary.best else None) == (expected.number if expected else None)
    saved = json.loads((Path(cfg.output.dir) / "summary.json").read_text())
    assert saved["selection"]["objectives"] == [
        {"metric": "eval_loss", "direction": "minimize"},
        {"metric": "forgetting", "direction": "minimize"},
    ]
    assert "within its margin" in saved["selection"]["rule"]
    assert saved["selection"]["pareto_front"] == sorted(t.number for t in study.best_trials)
    assert (Path(cfg.output.dir) / "plots" / "pareto_front.png").is_file()

    search(cfg, extra_trials=2)  # resumes the same two studies
    study = optuna.load_study(study_name=study_name(cfg), storage=storage)
    companion = optuna.load_study(study_name=study_name(cfg) + COMPANION_SUFFIX, storage=storage)
    assert len(study.trials) == len(companion.trials) == 5
    assert all(t.state.is_finished() for t in (*study.trials, *companion.trials))


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
