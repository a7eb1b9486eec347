"""`run` after the study: evaluate once on the test split, gate, and the forgetting-aware search."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from hpo_action.cli import main
from hpo_action.config import parse_config
from hpo_action.judge.forgetting import load_forgetting_sets
from hpo_action.judge.forgetting_split import forgetting_parts
from hpo_action.pipeline import run
from hpo_action.search.naming import storage_url, study_name

from .helpers import QUICKSTART, small_config, write_config

pytestmark = pytest.mark.slow

FORGETTING = {"forgetting": [{"name": "copy", "data": "forget_copy.jsonl", "metric": "exact_match", "margin": 0.05}]}


def _config(tmp_path: Path, **sections):
    return small_config(tmp_path, gate=FORGETTING, **sections)


def test_damage_config_is_rejected_for_forgetting_and_names_the_benchmark(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-c", str(QUICKSTART / "damage.yaml"), "--output", str(tmp_path), "--fail-on-reject"])
    assert exit_info.value.code == 3
    result = json.loads((tmp_path / "gate.json").read_text())
    assert result["decision"] == "reject"
    assert result["primary"]["delta"] > 0.5  # it did learn the new task...
    (copy,) = result["forgetting"]
    assert copy["name"] == "copy" and copy["status"] == "failed"  # ...and forgot the old one
    assert any(reason.startswith("forgetting on copy") for reason in result["reasons"])
    assert "gate: REJECT" in capsys.readouterr().out
    for name in ("test.base", "test.candidate", "copy.base", "copy.candidate"):
        assert (tmp_path / "predictions" / f"{name}.jsonl").is_file()
        assert (tmp_path / "predictions" / f"{name}.meta.json").is_file()


def test_forgetting_constraint_picks_the_best_feasible_trial(tmp_path: Path):
    raw = _config(
        tmp_path,
        search={
            "sampler": "grid",
            "pruner": "none",
            "n_trials": 2,
            "forgetting_constraint": True,
            "budget": {"max_steps": 40, "eval_every": 20},
            "space": {"learning_rate": {"choices": [1e-4, 1e-2]}},
        },
    )
    cfg = parse_config(raw, base_dir=tmp_path)
    result = run(cfg)
    study = optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg))
    by_lr = {t.params["learning_rate"]: t for t in study.trials}
    assert by_lr[1e-2].value < by_lr[1e-4].value  # the aggressive trial fits the task better...
    assert by_lr[1e-2].constraints["forgetting:copy"] > 0  # ...but forgets: infeasible
    assert by_lr[1e-4].constraints["forgetting:copy"] <= 0
    assert study.best_trial.number == by_lr[1e-4].number
    assert result.forgetting[0].passed
    # The gate tested only the rows the probe never saw (issue 21): the quickstart's 128 probe rows held back.
    (copy,) = json.loads((Path(cfg.output.dir) / "gate.json").read_text())["forgetting"]
    assert (copy["probe_rows"], copy["gate_rows"], copy["n"]) == (128, 272, 272)
    gated = {json.loads(line)["id"] for line in (Path(cfg.output.dir) / "predictions" / "copy.base.jsonl").open()}
    probed = {row["id"] for row in forgetting_parts(cfg, load_forgetting_sets(cfg))["copy"].probe}
    assert len(gated) == 272 and len(probed) == 128 and not gated & probed
    summary = json.loads((Path(cfg.output.dir) / "summary.json").read_text())
    assert summary["selection"]["feasible"] == 1  # the gentle trial only


def test_champion_predictions_replace_the_base_as_reference(tmp_path: Path):
    cfg = parse_config(_config(tmp_path, search={"n_trials": 2}), base_dir=tmp_path)
    champion = tmp_path / "champion.jsonl"
    ids = [json.loads(line)["id"] for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    champion.write_text("".join(json.dumps({"id": i, "exact_match": True, "loss": 0.0}) + "\n" for i in ids))
    result = run(cfg, champion_predictions=champion)
    assert result.primary.reference == 1.0
    assert result.decision != "promote"
    assert not (Path(cfg.output.dir) / "predictions" / "test.base.jsonl").exists()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda raw: raw["data"].pop("test"), "data.test: `run` gates on a held-out test split"),
        (lambda raw: raw["gate"]["forgetting"][0].update(data="nowhere.jsonl"), "gate.forgetting[copy].data"),
        (lambda raw: raw["evaluate"].update(metrics=["bleu"]), "evaluate.metrics"),
    ],
)
def test_run_bad_input_exits_2_before_any_study(tmp_path: Path, capsys, mutate, expected):
    raw = _config(tmp_path)
    mutate(raw)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-c", str(write_config(tmp_path, raw))])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "out" / "study.db").exists()
