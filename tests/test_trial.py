"""One trial on the real tiny model: adapters come and go, the base stays bit-identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hpo_action.config import parse_config
from hpo_action.data.loading import load_splits
from hpo_action.data.tokenize import tokenize_splits
from hpo_action.errors import TrialError
from hpo_action.search.space import trial_defaults
from hpo_action.train.models import load_base_model
from hpo_action.train.trial import Pruned, TrialRunner

from .helpers import small_config


def _runner(tmp_path: Path, **sections) -> tuple[TrialRunner, dict]:
    cfg = parse_config(small_config(tmp_path, **sections), base_dir=tmp_path)
    base = load_base_model(cfg.model)
    train, validation, _ = tokenize_splits(load_splits(cfg.data), base.tokenizer, cfg.data, tmp_path / "cache")
    return TrialRunner(cfg, base, train, validation), trial_defaults(cfg)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_identical(before: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_base_weights_are_bit_identical_after_lora_trials(tmp_path: Path):
    runner, params = _runner(tmp_path)
    before = _snapshot(runner.base.model)
    first = runner.run({**params, "learning_rate": 3e-2, "lora_r": 4})
    second = runner.run({**params, "learning_rate": 1e-3, "lora_r": 8}, save_to=lambda v: tmp_path / "adapter")
    assert first.steps == second.steps == 6
    assert first.value != second.value  # the adapters really trained, differently
    _assert_identical(before, runner.base.model)
    assert not any("lora" in name for name, _ in runner.base.model.named_modules())
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "tokenizer_config.json").is_file()


def test_full_fine_tuning_restores_the_kept_weights(tmp_path: Path):
    runner, params = _runner(tmp_path, model={"method": "full"})
    before = _snapshot(runner.base.model)
    result = runner.run({**params, "learning_rate": 1e-3})
    assert len(result.curve) == 2
    _assert_identical(before, runner.base.model)


def test_curve_reports_to_the_pruner_and_pruning_stops_training(tmp_path: Path):
    runner, params = _runner(tmp_path)
    seen: list[tuple[float, int]] = []

    def report(value: float, step: int) -> bool:
        seen.append((value, step))
        return step >= 3

    with pytest.raises(Pruned) as pruned:
        runner.run(params, report=report)
    assert pruned.value.step == 3
    assert [s for _, s in seen] == [3]


def test_non_finite_loss_is_a_trial_error(tmp_path: Path):
    runner, params = _runner(tmp_path)
    before = _snapshot(runner.base.model)
    with pytest.raises(TrialError, match="non-finite"):
        runner.run({**params, "learning_rate": 1e12, "max_grad_norm": 1e30})
    _assert_identical(before, runner.base.model)  # a failed trial leaves no adapter behind either


def test_early_stopping_ends_a_trial_without_improvement(tmp_path: Path):
    runner, params = _runner(
        tmp_path,
        search={"budget": {"max_steps": 12, "eval_every": 2}},
        train={"early_stopping_patience": 1, "early_stopping_threshold": 100.0},
    )
    result = runner.run(params)
    assert result.stopped_early
    assert result.steps == 4  # first evaluation sets the best, the second fails to beat it by 100
