"""Resumable trials (search.resume_trials) on the real tiny model: a resumed trial follows the uninterrupted
curves, a SIGKILLed run resumes its trial from the last checkpoint, checkpoints go when a trial ends, and one
written for other parameters is never resumed."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo_action.config import parse_config
from hpo_action.data.loading import load_splits
from hpo_action.data.tokenize import tokenize_splits
from hpo_action.errors import ConfigError
from hpo_action.search.space import trial_defaults
from hpo_action.train.checkpoints import TrialCheckpoints, identity
from hpo_action.train.models import load_base_model
from hpo_action.train.trial import Pruned, TrialRunner

from .helpers import small_config

# Every evaluation point is a checkpoint: 9 steps, evaluated (and checkpointed) at 3, 6 and 9.
BUDGET = {"max_steps": 9, "eval_every": 3}


def _runner(tmp_path: Path, **sections) -> tuple[TrialRunner, dict]:
    raw = small_config(tmp_path, **sections)
    raw["search"].update(budget=BUDGET, resume_trials=True)
    cfg = parse_config(raw, base_dir=tmp_path)
    base = load_base_model(cfg.model)
    train, validation, _ = tokenize_splits(load_splits(cfg.data), base.tokenizer, cfg.data, tmp_path / "cache")
    return TrialRunner(cfg, base, train, validation), trial_defaults(cfg)


def _checkpoints(runner: TrialRunner, folder: Path, params: dict) -> TrialCheckpoints:
    return TrialCheckpoints(folder, identity(params, runner.cfg.fingerprint()))


def _stop_at(step: int):
    """A reporter that stops training at `step`'s evaluation, before that step's checkpoint is written: the run
    ends as a kill there would, with the checkpoint of the evaluation before."""
    return lambda value, at: at >= step


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_resumed_trial_follows_the_uninterrupted_curves(tmp_path: Path, method: str):
    runner, params = _runner(tmp_path, model={"method": method})
    params = {**params, "learning_rate": 1e-3 if method == "lora" else 1e-4}
    whole = runner.run(params, checkpoints=_checkpoints(runner, tmp_path / "whole", params))

    interrupted = _checkpoints(runner, tmp_path / "cut", params)
    with pytest.raises(Pruned):
        runner.run(params, report=_stop_at(6), checkpoints=interrupted)
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint-*")) == ["checkpoint-3"]

    again = _checkpoints(runner, tmp_path / "cut", params)
    resumed = runner.run(params, checkpoints=again)
    assert again.resumed_from_step == 3 and again.checkpoint_bytes > 0
    assert resumed.steps == whole.steps == 9
    # On CPU the resumed run repeats the uninterrupted one bit for bit: weights, optimizer and scheduler state,
    # RNG states and the data order all come back. Tolerance: exact equality of every logged float.
    assert [s for s, _ in resumed.curve] == [3, 6, 9]
    assert resumed.curve == whole.curve
    assert resumed.train_curve == whole.train_curve
    assert resumed.value == whole.value


def test_kfold_with_resume_trials_is_refused_at_load(tmp_path: Path):
    raw = small_config(tmp_path, data={**small_config(tmp_path)["data"], "validation_strategy": "kfold", "k": 3})
    raw["search"]["resume_trials"] = True
    with pytest.raises(ConfigError, match=r"search\.resume_trials: k-fold trials cannot resume") as err:
        parse_config(raw, base_dir=tmp_path)
    assert err.value.exit_code == 2
