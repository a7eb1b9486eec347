"""search.finalists (search/reseed_finalists.py): the bound checked against scipy's t interval, the choice it makes
(a steady finalist over a lucky one, a failed retraining never chosen), the config's one-line exit-2 errors, and a
real study on the tiny model whose top trials are retrained on another seed, recorded in finalists.csv and
summary.json, with best/ holding the chosen configuration's weights."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from hpo_action.cli import main
from hpo_action.search.reseed_finalists import CONFIDENCE, Candidate, SeedRun, choose, retrain, score
from hpo_action.search.summary import RunSummary
from hpo_action.train.models import adapter_sha256

from .helpers import error_line, small_config, write_config


def runs_of(number: int, values: list[float | None]) -> list[SeedRun]:
    return [SeedRun(number, seed, value, 10) for seed, value in enumerate(values, start=1)]


def test_the_bound_is_the_one_sided_student_t_bound_on_the_mean_with_the_pooled_seed_sd():
    import numpy as np
    from scipy import stats

    first, second = [0.31, 0.27, 0.42, 0.35], [0.5, 0.52, 0.47, 0.61]
    candidates = [Candidate(7, {}, first[0]), Candidate(8, {}, second[0])]
    runs = runs_of(7, first[1:]) + runs_of(8, second[1:])
    pooled_sd = math.sqrt((np.var(first, ddof=1) + np.var(second, ddof=1)) / 2)
    for minimize in (True, False):
        for values, found in zip((first, second), score(candidates, runs, minimize), strict=True):
            # the one-sided bound at CONFIDENCE is an end of the two-sided interval at 2·CONFIDENCE − 1
            scale = pooled_sd / math.sqrt(len(values))
            low, high = stats.t.interval(2 * CONFIDENCE - 1, 2 * (len(values) - 1), np.mean(values), scale)
            assert found.bound == pytest.approx(high if minimize else low)
            assert found.mean == pytest.approx(np.mean(values)) and found.sd == pytest.approx(np.std(values, ddof=1))
        (own,) = score(candidates[:1], runs, minimize, pooled=False)
        low, high = stats.t.interval(2 * CONFIDENCE - 1, len(first) - 1, np.mean(first), stats.sem(first))
        assert own.bound == pytest.approx(high if minimize else low)


def test_a_steady_finalist_beats_one_whose_single_run_was_lucky():
    lucky = Candidate(3, {}, 0.10)  # the single-run pick: its own run is the best of all
    steady = Candidate(5, {}, 0.20)
    runs = runs_of(3, [0.60, 0.15]) + runs_of(5, [0.21, 0.19])
    scores = score([lucky, steady], runs)
    assert choose(scores) == 5
    assert scores[0].mean > scores[1].mean


def test_a_finalist_whose_retraining_failed_is_never_chosen_and_all_failed_keeps_the_search_pick():
    first, second = Candidate(1, {}, 0.1), Candidate(2, {}, 0.5)
    assert choose(score([first, second], runs_of(1, [None, 0.1]) + runs_of(2, [0.5, 0.5]))) == 2
    all_failed = score([first, second], runs_of(1, [None]) + runs_of(2, [math.nan]))
    assert choose(all_failed) == 1
    maximized = score([first, second], runs_of(1, [0.9]) + runs_of(2, [0.1]), minimize=False)
    assert choose(maximized, minimize=False) == 1 and choose(maximized) == 2


def test_retraining_calls_every_finalist_on_every_seed_seed_major():
    calls: list[tuple[int, int]] = []

    def train(candidate: Candidate, seed: int) -> SeedRun:
        calls.append((candidate.number, seed))
        return SeedRun(candidate.number, seed, 0.0, 4)

    retrain([Candidate(4, {}, 0.0), Candidate(9, {}, 0.1)], [43, 44], train)
    assert calls == [(4, 43), (9, 43), (4, 44), (9, 44)]


@pytest.mark.parametrize(
    ("finalists", "key"),
    [
        ({"top_k": 1}, "search.finalists.top_k"),
        ({"top_k": 2, "seeds": 0}, "search.finalists.seeds"),
        ({"top_k": 2, "seed": 3}, "search.finalists.seed"),
    ],
)
def test_a_bad_finalists_setting_is_one_line_exit_2_naming_the_field(tmp_path: Path, capsys, finalists, key):
    raw = small_config(tmp_path)
    raw["search"]["finalists"] = finalists
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "-c", str(write_config(tmp_path, raw))])
    assert exit_info.value.code == 2
    assert f"{key}: " in error_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_finalists_are_refused_with_several_objectives(tmp_path: Path, capsys):
    raw = small_config(tmp_path)
    raw["search"]["finalists"] = {"top_k": 2}
    raw["search"]["objectives"] = [{"metric": "eval_loss"}, {"metric": "forgetting"}]
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "-c", str(write_config(tmp_path, raw))])
    assert exit_info.value.code == 2
    assert "search.finalists.top_k: a multi-objective study" in error_line(capsys.readouterr().err)


@pytest.mark.slow
def test_a_real_study_retrains_its_top_trials_and_best_holds_the_chosen_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from hpo_action.config import load_config
    from hpo_action.pipeline import search

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = small_config(tmp_path)
    raw["search"].update(n_trials=3, pruner="none", finalists={"top_k": 2, "seeds": 1})
    raw["output"]["keep_all_adapters"] = True  # every trial's weights, to compare best/ with the chosen one's
    cfg = load_config(write_config(tmp_path, raw))
    summary = search(cfg)
    out = tmp_path / "out"
    record = summary.selection.finalists
    seed = cfg.train.seed
    assert record.seeds == [seed + 1] and record.top_k == 2 and record.confidence == CONFIDENCE
    assert "Student-t bound" in summary.selection.rule and str(seed + 1) in summary.selection.rule
    rows = list(csv.DictReader((out / "finalists.csv").open()))
    assert len(rows) == 4 and {int(r["seed"]) for r in rows} == {seed, seed + 1}
    trials = {t.number: t for t in summary.trials}
    completed = sorted((t for t in trials.values() if t.state == "COMPLETE"), key=lambda t: t.value)
    assert {int(r["number"]) for r in rows} == {t.number for t in completed[:2]}
    for row in rows:
        number, value = int(row["number"]), float(row["value"])
        if int(row["seed"]) == seed:
            assert value == pytest.approx(trials[number].value)  # the search's own run
        else:
            assert int(row["steps"]) == 6 and value != pytest.approx(trials[number].value)  # another seed trained
    # the recorded rows decide the choice by the module's own rule, and summary.json says it
    by_number = {int(r["number"]): r for r in rows}
    chosen = [n for n, r in by_number.items() if r["chosen"] == "True"]
    assert chosen == [record.chosen] == [summary.best.number]
    written = RunSummary.read(out / "summary.json")
    assert written.selection.finalists == record and written.best.number == record.chosen
    assert written.total_steps == sum(t.steps or 0 for t in summary.trials) + 2 * 6
    # best/ holds the chosen configuration's weights: its search run's (kept) or its retraining's, whichever is better
    params = json.loads((out / "best" / "params.json").read_text())
    assert params["trial"] == record.chosen
    assert all(params["params"][name] == value for name, value in trials[record.chosen].params.items())
    own = adapter_sha256(out / "trials" / str(record.chosen))
    retrained_value = next(float(r["value"]) for r in rows if int(r["number"]) == record.chosen and r["steps"])
    if trials[record.chosen].value <= retrained_value:
        assert adapter_sha256(out / "best") == own
    else:
        assert adapter_sha256(out / "best") != own
    assert not (out / "finalists").exists()  # the retrained weights are not left behind


def test_a_persons_file_in_the_finalists_folder_is_never_deleted(tmp_path: Path):
    from hpo_action.errors import OutputError
    from hpo_action.layout import mark
    from hpo_action.search.reseed_finalists import remove_finalists_folder

    ours = tmp_path / "finalists" / "3-seed43"
    ours.mkdir(parents=True)
    (ours / "adapter_model.safetensors").write_bytes(b"w")
    mark(ours, "trial", trial=3)
    remove_finalists_folder(tmp_path / "finalists")
    assert not (tmp_path / "finalists").exists()
    ours.mkdir(parents=True)
    mark(ours, "trial", trial=3)
    notes = tmp_path / "finalists" / "notes.txt"
    notes.write_text("mine\n")
    with pytest.raises(OutputError, match=r"notes\.txt was not written by hpo-action"):
        remove_finalists_folder(tmp_path / "finalists")
    assert notes.read_text() == "mine\n"
