"""The real-vs-replay calibration (benchmarks/replay_calibration.py) without training: a saved real-study file of both
tasks is rescored by the committed tables and the replay side is recomputed (`--reuse-real`), per task; real studies
saved at other settings, or missing for a task, are refused with exit code 2 and nothing written."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from .helpers import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import replay_calibration
import table_manifest
from curves import TASKS, task_config
from replay_calibration import RealSet, RealStudy, save_real
from table_replay import Table

from hpo_action.search.space import trial_defaults

TRIALS = 3  # the saved studies' n_trials: the replay must use it, not the task config's 10


def saved_studies(task: str) -> RealSet:
    """Three picks on the task's committed table: its best grid point, another one, and no pick at all."""
    table = Table.load(task)
    truth = table.true_losses()
    ranked = sorted(truth, key=truth.__getitem__)
    cfg = task_config(TASKS[task])
    defaults = trial_defaults(cfg)

    def study(seed: int, point: tuple[Any, ...] | None) -> RealStudy:
        params = dict(zip(table.grid, point, strict=True)) if point is not None else None
        return RealStudy(seed, params, defaults, 0.1 if params else None, TRIALS, 1, 250, {"spared": 1}, 9.0)

    with pytest.MonkeyPatch.context() as patch:  # the demo model's hash is not compared: no need to build it here
        patch.setattr(table_manifest, "demo_model_sha256", lambda: "not built")
        settings = table_manifest.pins(cfg, 1)
    return RealSet(task, TRIALS, settings, [study(0, ranked[0]), study(1, ranked[len(ranked) // 2]), study(2, None)])


def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *args: str) -> None:
    monkeypatch.setattr(replay_calibration, "REAL", tmp_path / "real.json")
    monkeypatch.setattr(replay_calibration, "OUT", tmp_path / "calibration.json")
    monkeypatch.setattr(sys, "argv", ["replay_calibration.py", *args])
    replay_calibration.main()


@pytest.fixture(scope="module")
def saved() -> dict[str, RealSet]:
    return {task: saved_studies(task) for task in ("quickstart", "flat")}


def test_reuse_real_rescores_the_saved_picks_and_replays_each_task_at_their_settings(
    saved: dict[str, RealSet], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from scipy.stats import kstest

    save_real(saved, tmp_path / "real.json")
    run(monkeypatch, tmp_path, "--reuse-real", "--replays", "2", "--tasks", "quickstart,flat")
    result = json.loads((tmp_path / "calibration.json").read_text())
    assert (tmp_path / "calibration.png").stat().st_size > 0
    assert set(result["tasks"]) == {"quickstart", "flat"}
    for task, real in saved.items():
        table = Table.load(task)
        truth = table.true_losses()
        best = min(truth.values())
        ranked = sorted(truth, key=truth.__getitem__)
        expected = [0.0, truth[ranked[len(ranked) // 2]] - best, math.inf]  # no pick: infinite, as in the replay
        row = result["tasks"][task]
        assert row["real_regrets"][:2] == pytest.approx(expected[:2]) and row["real_regrets"][2] is None
        assert len(row["replay_regrets"]) == row["replays"] == 2 * len(table.seeds)
        assert row["pit"][2] >= sum(r is not None for r in row["replay_regrets"]) / row["replays"]
        assert row["real_studies"] == 3 and row["n_trials"] == TRIALS
        assert row["replay_trials_median"] <= TRIALS  # the saved n_trials, not the config's 10
        assert all(0 <= value <= 1 for value in row["pit"])
        assert row["ks_uniform_p"] == pytest.approx(kstest(row["pit"], "uniform").pvalue)
        epsilon = table.pooled_seed_sd()["epsilon"]
        assert row["epsilon"] == pytest.approx(epsilon)
        assert row["real_within_epsilon"]["hits"] == sum(r <= epsilon for r in expected)
        assert [s["seed"] for s in result["real"][task]] == [0, 1, 2]
        assert result["manifest"]["real"][task]["commit"] == real.settings["commit"]
        assert result["manifest"]["tables"][task]["data_fingerprint"] == real.settings["data_fingerprint"]


def test_reuse_real_refuses_studies_run_at_other_settings_or_missing_a_task(
    saved: dict[str, RealSet], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = RealSet.from_json(json.loads(json.dumps(asdict(saved["flat"]))))
    other.settings["config"]["search"]["budget"]["max_steps"] = 50
    save_real({"quickstart": saved["quickstart"], "flat": other}, tmp_path / "real.json")
    with pytest.raises(SystemExit) as exit_info:
        run(monkeypatch, tmp_path, "--reuse-real", "--replays", "1")
    assert exit_info.value.code == 2
    assert "the flat real studies ran at other settings (config differs at search.budget.max_steps)" in (
        capsys.readouterr().err
    )
    (tmp_path / "real.json").unlink()
    save_real({"quickstart": saved["quickstart"]}, tmp_path / "real.json")
    with pytest.raises(SystemExit) as exit_info:
        run(monkeypatch, tmp_path, "--reuse-real", "--replays", "1", "--tasks", "quickstart,flat")
    assert exit_info.value.code == 2
    assert "real.json: no real studies of flat; run without --reuse-real" in capsys.readouterr().err
    (tmp_path / "real.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        run(monkeypatch, tmp_path, "--reuse-real")
    assert exit_info.value.code == 2
    assert "real.json: no saved real studies" in capsys.readouterr().err
    assert not (tmp_path / "calibration.json").exists()


def test_each_process_saves_its_own_tasks_into_one_real_study_file(saved: dict[str, RealSet], tmp_path: Path) -> None:
    path = tmp_path / "real.json"
    save_real({"quickstart": saved["quickstart"]}, path)
    control = RealSet.from_json(json.loads(json.dumps(asdict(saved["flat"]))))
    control.rung_checks_off = True  # a control run (--no-rung-checks) keeps its mark
    save_real({"flat": control}, path)  # a second process running the other task
    fewer = RealSet.from_json(json.loads(json.dumps(asdict(saved["quickstart"]))))
    fewer.studies = fewer.studies[:1]
    save_real({"quickstart": fewer}, path)  # the first process again: its task replaced, the other kept
    loaded = replay_calibration.load_real(path)
    assert set(loaded) == {"quickstart", "flat"}
    assert [s.seed for s in loaded["quickstart"].studies] == [0]
    assert loaded["flat"] == control and loaded["flat"].rung_checks_off and not loaded["quickstart"].rung_checks_off
