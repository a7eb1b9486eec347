"""Studies on the real tiny model with real Optuna storage: resume, failures, samplers and pruners."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest

from hpo_action import data as data_module
from hpo_action.config import PRUNERS, SAMPLERS, parse_config
from hpo_action.pipeline import search
from hpo_action.space import warm_start_params
from hpo_action.study import storage_url, study_name

from .conftest import small_config

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
    assert all(t.state.is_finished() for t in study.trials)
    assert study.trials[0].params == pytest.approx(warm_start_params(cfg))  # warm start is trial 0
    assert len(calls) == 2  # train and validation, tokenized once for the whole study

    out = Path(cfg.output.dir)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert {"state", "value", "steps", "seconds", "param_learning_rate"} <= set(rows[0])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["best"]["number"] == study.best_trial.number == summary["best"]["number"]
    assert (out / "best" / "adapter_config.json").is_file()
    best_params = json.loads((out / "best" / "params.json").read_text())
    assert best_params["params"]["learning_rate"] == pytest.approx(study.best_params["learning_rate"])
    assert [p.name for p in (out / "trials").iterdir()] == [str(study.best_trial.number)]

    search(cfg)  # the same command again: nothing missing, nothing run, nothing re-tokenized
    assert len(_load(cfg).trials) == 3
    assert len(calls) == 2

    search(cfg, extra_trials=2)  # --n-trials 2 adds two
    assert len(_load(cfg).trials) == 5
    assert len(calls) == 2


def test_raising_and_nan_trials_fail_while_the_study_finishes(tmp_path: Path):
    space = {"learning_rate": {"choices": [1e-3, 1e12]}, "lr_scheduler_type": {"choices": ["cosine", "no_such"]}}
    cfg = _cfg(
        tmp_path,
        search={"sampler": "grid", "pruner": "none", "n_trials": 4, "space": space},
        train={"max_grad_norm": 1e30},
    )
    search(cfg)
    trials = {(t.params["learning_rate"], t.params["lr_scheduler_type"]): t for t in _load(cfg).trials}
    assert len(trials) == 4
    assert trials[(1e-3, "cosine")].state.name == "COMPLETE"
    assert trials[(1e12, "cosine")].state.name == "FAIL"
    assert "non-finite" in trials[(1e12, "cosine")].user_attrs["error"]
    for lr in (1e-3, 1e12):
        failed = trials[(lr, "no_such")]
        assert failed.state.name == "FAIL"
        assert "no_such" in failed.user_attrs["error"]


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
    search(cfg)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(cfg.search.storage))
    assert len(optuna.load_study(study_name=study_name(cfg), storage=storage).trials) == 2


def test_timeout_stops_starting_new_trials(tmp_path: Path):
    cfg = _cfg(tmp_path, search={"n_trials": 50, "timeout": 0.5})
    search(cfg)
    trials = _load(cfg).trials
    assert 1 <= len(trials) < 50
    assert all(t.state.is_finished() for t in trials)


def test_a_killed_run_resumes_and_fails_its_orphaned_trial_at_once(tmp_path: Path):
    import signal
    import subprocess
    import sys
    import time

    from .conftest import write_config

    raw = small_config(
        tmp_path, search={"n_trials": 4, "pruner": "none", "budget": {"max_steps": 100, "eval_every": 50}}
    )
    config = write_config(tmp_path, raw)
    cfg = parse_config(raw, base_dir=tmp_path)
    command = [sys.executable, "-m", "hpo_action", "search", "-c", str(config)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    running = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.5)
        if (tmp_path / "out" / "study.db").exists():
            try:
                running = [t for t in _load(cfg).trials if t.state.name == "RUNNING"]
            except (KeyError, ValueError):  # the study is still being created
                continue
    assert running, "no trial started within 120 s"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(t.state.name == "RUNNING" for t in _load(cfg).trials)

    resumed = subprocess.run(command, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    trials = _load(cfg).trials
    assert not any(t.state.name == "RUNNING" for t in trials)
    assert sum(t.state.is_finished() for t in trials) == 4
    orphan = next(t for t in trials if t.number == running[0].number)
    assert orphan.state.name == "FAIL" and "died during this trial" in orphan.user_attrs["error"]
