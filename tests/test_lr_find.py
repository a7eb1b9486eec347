"""The learning-rate range test on the real tiny model: `hpo-action lr-find` writes its curve, suggestion and
plot; `search.lr_bounds: auto` narrows a new study's range around the suggestion and keeps it on resume."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner

from hpo_action.cli import cli
from hpo_action.config import parse_config
from hpo_action.pipeline import search
from hpo_action.search import lr_window
from hpo_action.search.naming import storage_url, study_name

from .helpers import QUICKSTART, small_config, write_config

pytestmark = pytest.mark.slow


def test_lr_find_writes_the_curve_a_suggestion_and_a_plot(tmp_path: Path):
    config = write_config(tmp_path, small_config(tmp_path))
    result = CliRunner().invoke(cli, ["lr-find", "-c", str(config), "--steps", "20", "--output", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "o" / "lr_find" / "lr_find.json").read_text())
    rates, smoothed = found["learning_rates"], found["smoothed"]
    assert len(rates) == len(smoothed) == found["steps"] == 20
    assert all(b > a for a, b in itertools.pairwise(rates))  # exponentially increasing
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1.0)
    assert rates[0] < found["suggestion"] < found["minimum"] <= rates[-1]
    assert (tmp_path / "o" / "lr_find" / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"suggested learning rate: {found['suggestion']:.3g}" in result.output


def test_lr_bounds_auto_narrows_a_new_study_and_keeps_the_range_on_resume(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(lr_window, "AUTO_STEPS", 30)
    raw = small_config(tmp_path, search={"lr_bounds": "auto", "n_trials": 2, "pruner": "none"})
    cfg = parse_config(raw, base_dir=tmp_path)
    search(cfg)
    study = optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg))
    low, high = study.user_attrs["lr_bounds"]
    found = json.loads((Path(cfg.output.dir) / "lr_find" / "lr_find.json").read_text())
    assert math.log10(high / low) <= 2.0 + 1e-9  # at most a decade either side of the suggestion
    assert low <= found["suggestion"] <= high
    assert all(low <= t.params["learning_rate"] <= high for t in study.trials)
    assert {t.state.name for t in study.trials} == {"COMPLETE"}  # trials ran in the narrowed range (pruner none)

    (Path(cfg.output.dir) / "lr_find" / "lr_find.json").unlink()
    search(cfg, extra_trials=1)  # a resume reads the stored range: no second range test, the same study
    assert not (Path(cfg.output.dir) / "lr_find" / "lr_find.json").exists()
    study = optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg))
    assert len(study.trials) == 3
    assert all(low <= t.params["learning_rate"] <= high for t in study.trials)


def test_the_window_stays_inside_the_configured_range_where_they_overlap():
    assert lr_window.window(1e-3, 1e-5, 1e-1) == pytest.approx((1e-4, 1e-2))
    assert lr_window.window(1e-3, 5e-4, 1e-1) == pytest.approx((5e-4, 1e-2))
    assert lr_window.window(1e-2, 1e-6, 1e-4) == pytest.approx((1e-3, 1e-1))  # a misplaced range is replaced


def _strategy_config(tmp_path: Path, strategy: str, **sections: Any) -> dict[str, Any]:
    """The small quickstart config validated by `strategy`: holdout, kfold (2 folds) or time (the time-split
    example's rows)."""
    raw = small_config(tmp_path, **sections)
    if strategy == "kfold":
        raw["data"].update(validation_strategy="kfold", k=2)
    if strategy == "time":
        shutil.copy(QUICKSTART.parent / "time_split" / "rows.jsonl", tmp_path / "rows.jsonl")
        raw["data"].update(train="rows.jsonl", validation_strategy="time", time_field="created")
        for key in ("validation", "test"):
            raw["data"].pop(key)
    return raw


def test_lr_find_runs_on_a_kfold_config(tmp_path: Path):
    """The command that exited 1 ('CrossValidatedRunner' object has no attribute 'cfg'); the time split's range
    test runs in the lr_bounds test below, the holdout's in the first test above."""
    config = write_config(tmp_path, _strategy_config(tmp_path, "kfold"))
    result = CliRunner().invoke(cli, ["lr-find", "-c", str(config), "--steps", "12", "--output", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    found = json.loads((tmp_path / "o" / "lr_find" / "lr_find.json").read_text())
    assert found["steps"] == 12 and all(math.isfinite(loss) for loss in found["losses"])
    assert found["learning_rates"][0] <= found["suggestion"] <= found["learning_rates"][-1]


@pytest.mark.parametrize("strategy", ["kfold", "time"])
def test_lr_bounds_auto_narrows_the_range_for_kfold_and_time_splits(tmp_path: Path, monkeypatch, strategy: str):
    monkeypatch.setattr(lr_window, "AUTO_STEPS", 12)
    raw = _strategy_config(tmp_path, strategy, search={"lr_bounds": "auto", "n_trials": 1, "pruner": "none"})
    cfg = parse_config(raw, base_dir=tmp_path)
    search(cfg)
    study = optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg))
    low, high = study.user_attrs["lr_bounds"]
    found = json.loads((Path(cfg.output.dir) / "lr_find" / "lr_find.json").read_text())
    configured = cfg.search.space["learning_rate"]
    assert (low, high) == pytest.approx(lr_window.window(found["suggestion"], configured.low, configured.high))
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert low <= study.trials[0].params["learning_rate"] <= high


def test_the_range_test_trains_with_the_trials_own_setup(tmp_path: Path, monkeypatch):
    """LoRA+, `optim`, replay and the KL to the base all reach the range test's training steps, as in a trial;
    only the learning rate follows the ramp (every group alike, so LoRA+'s ratio holds)."""
    import torch
    from rich.console import Console

    from hpo_action.data.loading import load_splits
    from hpo_action.data.replay import REPLAY_COLUMN
    from hpo_action.search.space import trial_defaults
    from hpo_action.session import trial_runner
    from hpo_action.train.lr_find import lr_range_test
    from hpo_action.train.remedies import RemedyTrainer

    raw = small_config(tmp_path, data={"replay": ["replay_copy.jsonl"]})
    cfg = parse_config(raw, base_dir=tmp_path)
    seen: list[dict[str, Any]] = []
    original = RemedyTrainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):  # type: ignore[no-untyped-def]
        if model.training:
            flags = inputs.get(REPLAY_COLUMN)
            rates = [group["lr"] for group in self.optimizer.param_groups if group["params"]]
            inner = getattr(self.optimizer, "optimizer", self.optimizer)  # accelerate wraps it
            seen.append({"optimizer": type(inner), "rates": rates, "kl": self.kl_to_base, "flags": flags})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(RemedyTrainer, "compute_loss", spy)
    runner = trial_runner(cfg, load_splits(cfg.data), None, Console(quiet=True))
    params = {**trial_defaults(cfg), "loraplus_lr_ratio": 16.0, "optim": "sgd", "replay_ratio": 0.5, "kl_to_base": 0.5}
    found = lr_range_test(runner, params, start=1e-5, end=1e-1, steps=6)
    assert found.steps == 6 and len(seen) == 6
    assert all(step["optimizer"] is torch.optim.SGD and step["kl"] == 0.5 for step in seen)
    assert all(max(step["rates"]) == pytest.approx(16 * min(step["rates"])) for step in seen)
    assert [min(step["rates"]) for step in seen] == pytest.approx(found.learning_rates)
    assert sum(int(step["flags"].sum()) for step in seen if step["flags"] is not None) > 0  # replay rows trained


def test_the_suggestion_is_two_thirds_along_the_longest_descent_not_a_noisy_start():
    from hpo_action.train.lr_find import LrRamp, read_curve

    ramp = LrRamp(1e-6, 1.0, 100)
    rates = [ramp.rate(step) for step in range(1, 101)]
    noise = [4.0 + 0.01 * (i % 2) for i in range(40)]
    smoothed = [6.0, *noise[1:], *(4.0 - 0.1 * i for i in range(1, 31)), *(1.0 + 0.2 * i for i in range(1, 31))]
    reading = read_curve(rates, smoothed)
    assert reading.steepest < rates[5]  # the drop at the start is the steepest descent ...
    assert reading.suggestion == rates[39 + 20]  # ... the suggestion: two thirds along the long one (steps 39-69)
    assert reading.minimum == rates[69]
