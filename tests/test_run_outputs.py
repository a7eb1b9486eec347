"""The output folder after a real study: trials.csv names each forgetting column for what it holds, and a person's
file inside hpo-action's own trials/<n>/ or best/ stops the next study (exit 2, naming the file) instead of being
deleted with the folder."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpo_action.cli import main
from hpo_action.config import load_config
from hpo_action.report.tables import signed, tradeoff_line
from hpo_action.search.summary import RunSummary

from .helpers import error_line, small_config, write_config

pytestmark = pytest.mark.slow

MARGIN = 0.3


@pytest.fixture(scope="module")
def studied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A one-trial study with the forgetting constraint on: the trial records its probe's delta and excess. The
    probe (120 rows) and the margin (0.3) are large enough that a trial that keeps the copy skill is feasible."""
    from hpo_action.pipeline import search

    root = tmp_path_factory.mktemp("outputs")
    raw = small_config(root)
    raw["search"].update(
        n_trials=1, pruner="none", forgetting_constraint=True, forgetting_probe_size=120, budget={"max_steps": 4}
    )
    raw["gate"]["forgetting"][0]["margin"] = MARGIN
    raw["search"]["budget"]["eval_every"] = 4
    config = write_config(root, raw)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        search(load_config(config))
    yield config


def test_trials_csv_holds_the_measured_delta_under_the_sets_name_and_the_excess_apart(studied: Path):
    out = studied.parent / "out"
    (row,) = list(csv.DictReader((out / "trials.csv").open()))
    summary = RunSummary.read(out / "summary.json")
    (trial,) = summary.trials
    drop, excess = trial.forgetting_drop["copy"], trial.forgetting["copy"]
    # The constraint value is how far the probe's lower bound falls below −margin: ≤ 0 for this feasible trial, and
    # never below the point estimate's own distance (drop − margin), since the bound lies under the estimate.
    assert drop - MARGIN - 1e-12 <= excess <= 0
    assert float(row["forgetting_copy"]) == pytest.approx(-drop)
    assert float(row["margin_excess_copy"]) == pytest.approx(excess)
    # The report's trade-off line shows the same number as the column named after the set.
    line = tradeoff_line(summary)
    assert line is not None and f"copy {signed(float(row['forgetting_copy']))}" in line


@pytest.mark.parametrize("where", ["trials/0", "best"])
def test_a_persons_file_inside_the_tools_folders_stops_the_next_study(studied: Path, where: str, capsys):
    out = studied.parent / "out"
    main_args = ["search", "-c", str(studied)]
    main(main_args)  # the same study again: hpo-action's own files (params.json, the adapter) are no obstacle
    capsys.readouterr()
    notes = out / where / "my-notes.txt"
    notes.write_text("mine\n")
    try:
        with pytest.raises(SystemExit) as exit_info:
            main(main_args)
        assert exit_info.value.code == 2
        assert f"{notes} was not written by hpo-action" in error_line(capsys.readouterr().err)
        assert notes.read_text() == "mine\n"
    finally:
        notes.unlink()
