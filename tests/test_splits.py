"""Validation strategies: holdout, kfold and time, each leaving the test split untouched; kfold trials report the
mean of their folds, and the pruner hears the running mean fold by fold."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from hpo_action.cli import main
from hpo_action.config import parse_config
from hpo_action.data.loading import load_splits
from hpo_action.data.splits import parse_time
from hpo_action.errors import ConfigError, DataError

from .helpers import QUICKSTART, small_config, write_config

TIME_ROWS = QUICKSTART.parent / "time_split" / "rows.jsonl"


def _data(tmp_path: Path, **data) -> object:
    return parse_config(small_config(tmp_path, data=data), base_dir=tmp_path).data


def test_kfold_pools_train_and_validation_into_k_balanced_disjoint_folds(tmp_path: Path):
    holdout = load_splits(_data(tmp_path))
    splits = load_splits(_data(tmp_path, validation_strategy="kfold", k=3))
    folds = splits.folds
    assert folds is not None and folds.k == 3
    pool_ids = {row["id"] for row in folds.pool}
    assert pool_ids == {row["id"] for row in holdout.train + holdout.validation}  # 640 + 80
    assert sorted(Counter(folds.assignment.values()).values()) == [240, 240, 240]
    for fold in range(3):
        train, validation = folds.split(fold)
        assert {r["id"] for r in train} | {r["id"] for r in validation} == pool_ids
        assert not {r["id"] for r in train} & {r["id"] for r in validation}
    assert (splits.train, splits.validation) == folds.split(2)  # the kept model's fold
    assert splits.test == holdout.test  # the test split is untouched
    again = load_splits(_data(tmp_path, validation_strategy="kfold", k=3))
    assert again.folds.assignment == folds.assignment  # seeded: the same folds every run


def test_kfold_needs_enough_rows(tmp_path: Path):
    lines = (QUICKSTART / "train.jsonl").read_text().splitlines()[:5]
    (tmp_path / "tiny.jsonl").write_text("\n".join(lines) + "\n")
    raw = small_config(tmp_path, data={"validation_strategy": "kfold", "k": 4, "train": "tiny.jsonl"})
    raw["data"].pop("validation")
    with pytest.raises(DataError, match=r"data\.k: 4 folds need at least 8 rows"):
        load_splits(parse_config(raw, base_dir=tmp_path).data)


def test_time_split_holds_out_the_latest_rows_and_cuts_test_from_the_very_latest(tmp_path: Path):
    shutil.copy(TIME_ROWS, tmp_path / "rows.jsonl")
    raw = small_config(tmp_path, data={"train": "rows.jsonl", "validation_strategy": "time", "time_field": "created"})
    for key in ("validation", "test"):
        raw["data"].pop(key)
    splits = load_splits(parse_config(raw, base_dir=tmp_path).data)
    times = {
        name: [parse_time(r["created"]) for r in rows]
        for name, rows in vars(splits).items()
        if rows and name != "folds"
    }
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (
        745,
        83,
        92,
    )  # 10 % of 920, then 10 % of 828
    assert max(times["train"]) < min(times["validation"]) <= max(times["validation"]) < min(times["test"])
    assert times["train"] == sorted(times["train"])


def test_time_split_with_a_test_file_leaves_it_as_given(tmp_path: Path):
    raw = small_config(tmp_path, data={"validation_strategy": "time", "time_field": "created"})
    raw["data"].pop("validation")
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["created"] = 1_700_000_000 + (len(rows) - i) * 60  # epoch seconds, newest first in the file
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = load_splits(parse_config(raw, base_dir=tmp_path).data)
    assert splits.test == load_splits(_data(tmp_path)).test
    assert [r["id"] for r in splits.validation] == [r["id"] for r in rows[:64]][::-1]  # the newest 10 %


@pytest.mark.parametrize(
    ("value", "message"),
    [(None, r"row id 'train-0003' has no 'created'"), ("next tuesday", r"'next tuesday' is not a time")],
)
def test_time_split_refuses_a_missing_or_unparseable_time_with_exit_2(tmp_path: Path, capsys, value, message):
    rows = [json.loads(line) for line in (QUICKSTART / "train.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        row["created"] = f"2024-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z"
    rows[3]["created"] = value
    raw = small_config(tmp_path, data={"validation_strategy": "time", "time_field": "created"})
    raw["data"].pop("validation")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-c", str(write_config(tmp_path, raw))])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.replace('"', "'")
    assert not (tmp_path / "out" / "study.db").exists()  # refused before anything was written


def test_time_strategy_needs_its_field_and_makes_its_own_validation(tmp_path: Path):
    raw = small_config(tmp_path, data={"validation_strategy": "time"})
    with pytest.raises(ConfigError, match=r"needs data\.time_field"):
        parse_config(raw, base_dir=tmp_path)
    raw["data"]["time_field"] = "created"
    with pytest.raises(ConfigError, match=r"remove data\.validation"):
        parse_config(raw, base_dir=tmp_path)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2024-01-01T00:00:00Z", 1704067200.0),
        ("2024-01-01", 1704067200.0),
        (1704067200, 1704067200.0),
        ("1704067200.5", 1704067200.5),
        ("2024-01-01T01:00:00+01:00", 1704067200.0),
    ],
)
def test_parse_time_reads_iso_text_and_epoch_seconds(value, seconds):
    assert parse_time(value) == seconds


@pytest.mark.parametrize("value", [True, None, "soon", float("nan"), [2024]])
def test_parse_time_refuses_what_is_not_a_time(value):
    with pytest.raises(ValueError):
        parse_time(value)


@pytest.mark.slow
def test_kfold_run_on_the_quickstart_reports_the_mean_of_three_folds(tmp_path: Path):
    import optuna

    from hpo_action.pipeline import run

    raw = small_config(
        tmp_path,
        data={"validation_strategy": "kfold", "k": 3},
        search={"n_trials": 2, "pruner": "none", "budget": {"max_steps": 4, "eval_every": 2}},
        gate={"forgetting": []},
    )
    decision = run(parse_config(raw, base_dir=tmp_path))
    assert decision.primary.n == 200  # the test split, untouched by the folds
    storage = f"sqlite:///{tmp_path / 'out' / 'study.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    for trial in optuna.load_study(study_name=summary.study_name, storage=storage).trials:
        folds = trial.user_attrs["fold_values"]
        assert len(folds) == 3 and len(set(folds)) == 3
        assert trial.value == pytest.approx(sum(folds) / 3)
        assert sorted(trial.intermediate_values) == [2, 4, 6, 8, 10, 12]  # fold f's step s is 4f + s
        assert trial.intermediate_values[12] == pytest.approx(trial.value)  # the running mean ends at the mean
        assert trial.intermediate_values[4] == pytest.approx(folds[0])
        assert trial.user_attrs["steps"] == 12
    cached = sorted(p.name for p in (tmp_path / "out" / "cache").iterdir() if not p.name.startswith("."))
    assert len(cached) == 1 and sorted(p.name for p in (tmp_path / "out" / "cache" / cached[0]).iterdir()) == ["pool"]


@pytest.mark.slow
def test_kfold_prunes_on_the_running_mean_fold_by_fold(tmp_path: Path):
    from hpo_action.data.tokenize import tokenize_for_study
    from hpo_action.search.space import trial_defaults
    from hpo_action.train.cross_validation import CrossValidatedRunner
    from hpo_action.train.models import load_base_model
    from hpo_action.train.trial import Pruned, TrialRunner

    raw = small_config(tmp_path, data={"validation_strategy": "kfold", "k": 3})
    raw["search"]["budget"] = {"max_steps": 2, "eval_every": 1}
    cfg = parse_config(raw, base_dir=tmp_path)
    base = load_base_model(cfg.model)
    folds, _ = tokenize_for_study(load_splits(cfg.data), base.tokenizer, cfg.data, tmp_path / "cache")
    runner = CrossValidatedRunner(TrialRunner(cfg, base, *folds[-1]), folds)
    heard: list[tuple[int, float]] = []

    def report(value: float, step: int) -> bool:
        heard.append((step, value))
        return step == 3  # the second fold's first evaluation

    with pytest.raises(Pruned) as pruned:
        runner.run({**trial_defaults(cfg), "learning_rate": 1e-2}, report=report)
    assert [step for step, _ in heard] == [1, 2, 3]
    assert pruned.value.step == 3 and pruned.value.value == pytest.approx(heard[-1][1])
    assert len(pruned.value.train_curve) == 3  # both logs of fold 0, one of fold 1, on the across-folds axis


def test_hyperband_under_kfold_counts_the_steps_of_every_fold(tmp_path: Path, monkeypatch):
    import optuna

    from hpo_action.search.optuna_backend.samplers import make_pruner

    monkeypatch.setattr(optuna.pruners, "HyperbandPruner", lambda **options: options)  # the options it is built with
    for k, data in ((1, {}), (3, {"validation_strategy": "kfold", "k": 3})):
        options = make_pruner(parse_config(small_config(tmp_path, data=data), base_dir=tmp_path))
        assert options["max_resource"] == 6 * k and options["min_resource"] == 3  # small_config: 6 steps, every 3


def test_hyperband_keeps_one_trial_in_two_unless_the_config_names_its_reduction_factor(tmp_path: Path, monkeypatch):
    """Hyperband's reduction factor is 2 by default (benchmarks/RESULTS.md, issue 23's league: at equal compute
    more studies end within the seed noise of the best configuration), and a user's pruner_options keep theirs."""
    import optuna

    from hpo_action.search.optuna_backend.samplers import make_pruner

    monkeypatch.setattr(optuna.pruners, "HyperbandPruner", lambda **options: options)  # the options it is built with
    raw = small_config(tmp_path)
    assert make_pruner(parse_config(raw, base_dir=tmp_path))["reduction_factor"] == 2
    raw["search"]["pruner_options"] = {"reduction_factor": 3}
    assert make_pruner(parse_config(raw, base_dir=tmp_path))["reduction_factor"] == 3
