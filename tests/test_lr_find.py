"""The learning-rate range test on the real tiny model: `hpo-action lr-find` writes its curve, suggestion and
plot; `search.lr_bounds: auto` narrows a new study's range around the suggestion and keeps it on resume."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner

from hpo_action.cli import cli
from hpo_action.config import parse_config
from hpo_action.pipeline import search
from hpo_action.search import lr_bounds
from hpo_action.search.storage import storage_url, study_name

from .helpers import small_config, write_config

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
    monkeypatch.setattr(lr_bounds, "AUTO_STEPS", 30)
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
    assert lr_bounds.window(1e-3, 1e-5, 1e-1) == pytest.approx((1e-4, 1e-2))
    assert lr_bounds.window(1e-3, 5e-4, 1e-1) == pytest.approx((5e-4, 1e-2))
    assert lr_bounds.window(1e-2, 1e-6, 1e-4) == pytest.approx((1e-3, 1e-1))  # a misplaced range is replaced
