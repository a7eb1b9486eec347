"""Studies on the real tiny model with real Optuna storage: resume, failures, samplers and pruners."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest

from hpo_action.config import PRUNERS, SAMPLERS, parse_config
from hpo_action.data import tokenize as data_module
from hpo_action.pipeline import search
from hpo_action.search.naming import storage_url, study_name
from hpo_action.search.space import warm_start_params

from .helpers import small_config

pytestmark = pytest.mark.slow


def _load(cfg) -> optuna.Study:
    return optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg))


def _cfg(tmp_path: Path, **sections):
    return parse_config(small_config(tmp_path, **sections), base_dir=tmp_path)


def test_search_writes_outputs_and_resumes_without_new_trials(tmp_path: Path, monkeypatch):
    calls = []
    real = data_module.tokenize_rows
    monkeypatch.setattr(data_module, "tokenize_rows", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = _cfg(tmp_path)

    summary = search(cfg)
    study = _load(cfg)
    assert len(study.trials) == 3
    assert {t.state.name for t in study.trials} <= {"COMPLETE", "PRUNED"}  # finished, and none by failing
    assert study.trials[0].state.name == "COMPLETE"  # the warm start: nothing to be pruned against yet
    assert study.trials[0].params == pytest.approx(warm_start_params(cfg))  # warm start is trial 0
    assert len(calls) == 2  # train and validation, tokenized once for the whole study

    out = Path(cfg.output.dir)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert {"state", "value", "steps", "seconds", "param_learning_rate"} <= set(rows[0])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["best"]["number"] == study.best_trial.number == summary.best.number
    assert (out / "best" / "adapter_config.json").is_file()
    best_params = json.loads((out / "best" / "params.json").read_text())
    assert best_params["params"]["learning_rate"] == pytest.approx(study.best_params["learning_rate"])
    assert [p.name for p in (out / "trials").iterdir()] == [str(study.best_trial.number)]

    search(cfg)  # the same command again: nothing missing, nothing run, nothing re-tokenized
    assert len(_load(cfg).trials) == 3
    assert len(calls) == 2

    search(cfg, extra_trials=2)  # --n-trials 2 adds two
    assert [t.state.name in ("COMPLETE", "PRUNED") for t in _load(cfg).trials] == [True] * 5
    assert len(calls) == 2


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs(tmp_path: Path, sampler: str):
    cfg = _cfg(tmp_path, search={"sampler": sampler, "pruner": "none", "n_trials": 3})
    search(cfg)
    trials = _load(cfg).trials
    assert len(trials) == 3
    assert all(t.state.name == "COMPLETE" for t in trials)


@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_runs(tmp_path: Path, pruner: str):
    cfg = _cfg(
        tmp_path,
        search={"pruner": pruner, "n_trials": 4, "budget": {"max_steps": 6, "eval_every": 2}},
    )
    search(cfg)
    study = _load(cfg)
    assert len(study.trials) == 4
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    assert all(len(t.intermediate_values) >= 1 for t in study.trials)


def test_journal_file_storage_works(tmp_path: Path):
    cfg = _cfg(tmp_path, search={"storage": "study.journal", "n_trials": 2})
    assert cfg.search.storage == str(tmp_path / "study.journal")
    summary = search(cfg)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(cfg.search.storage))
    trials = optuna.load_study(study_name=study_name(cfg), storage=storage).trials
    assert [t.state.name in ("COMPLETE", "PRUNED") for t in trials] == [True, True]
    assert summary.best is not None and summary.best.value == pytest.approx(trials[summary.best.number].value)


def test_timeout_stops_starting_new_trials(tmp_path: Path):
    cfg = _cfg(tmp_path, search={"n_trials": 50, "timeout": 0.5})
    search(cfg)
    trials = _load(cfg).trials
    assert 1 <= len(trials) < 50
    assert {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
