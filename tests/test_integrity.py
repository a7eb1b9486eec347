"""The run folder's integrity: nothing ungated is published, nothing the tool did not write is deleted, a real
full disk stops a run with one line and resumes once space is freed, and bad input is refused before anything."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import datasets
import optuna
import pytest

from hpo_action.config import load_config
from hpo_action.data.loading import load_splits
from hpo_action.data.tokenize import tokenize_rows
from hpo_action.errors import OutputError, TrialError
from hpo_action.layout import RunLayout, mark
from hpo_action.search.optuna_backend.storage import open_storage
from hpo_action.search.optuna_backend.study import keep_only_best
from hpo_action.train.models import load_tokenizer
from hpo_action.train.optimizers import trial_train_dataset

from .helpers import error_line, small_config, write_config


def _hpo(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpo_action", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_keep_only_best_deletes_only_the_trial_folders_it_marked(tmp_path: Path):
    study = optuna.create_study(direction="minimize")
    for value in (3.0, 1.0, 2.0):
        study.add_trial(optuna.trial.create_trial(value=value))
    trials = tmp_path / "trials"
    for number in (0, 1, 2):
        (trials / str(number)).mkdir(parents=True)
        mark(trials / str(number), "trial", trial=number)
    (trials / "7").mkdir()  # numbered, but not ours
    (trials / "notes").mkdir()  # a person's folder
    keep_only_best(study, trials)
    assert sorted(p.name for p in trials.iterdir()) == ["1", "7", "notes"]


def test_unknown_files_where_the_tool_writes_are_refused_before_anything_is_written(tmp_path: Path):
    config = write_config(tmp_path, small_config(tmp_path))
    out = tmp_path / "out"
    (out / "trials" / "my-notes").mkdir(parents=True)
    proc = _hpo("search", "-c", str(config))
    assert proc.returncode == 2
    assert f"{out / 'trials' / 'my-notes'} was not written by hpo-action" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["trials"]  # no study.db, cache/ or workers/
    shutil.rmtree(out / "trials")
    (out / "best").mkdir()  # a best/ without the tool's marker is someone's too
    proc = _hpo("search", "-c", str(config))
    assert proc.returncode == 2 and "best was not written by hpo-action" in proc.stderr


@pytest.mark.slow
def test_a_kill_between_best_and_the_gate_leaves_nothing_publishable(tmp_path: Path):
    raw = small_config(tmp_path, gate={"forgetting": []}, evaluate={"metrics": ["loss"]})
    raw["search"].update(n_trials=2, seed=0)
    config = write_config(tmp_path, raw)
    out, registry = tmp_path / "out", tmp_path / "registry"
    first = _hpo("run", "-c", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    verdict = json.loads((out / "gate.json").read_text())
    assert verdict["decision"] == "promote" and verdict["adapter_sha256"]
    saved = (out / "gate.json").read_text()

    # A new study replaces best/, then the process dies (kill -9) before anything is gated.
    shutil.rmtree(out / "trials")
    (out / "study.db").unlink()
    env = {**os.environ, "HPO_ACTION_FAULTS": "kill@after-best"}
    killed = _hpo("run", "-c", str(config), "--seed", "7", "--set", "train.lora_r=4", env=env)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "gate.json").exists()  # the old verdict went before the new weights arrived
    refused = _hpo("publish", "--registry", str(registry), "--from", str(out))
    assert refused.returncode == 2 and "no gate.json" in refused.stderr
    assert not registry.exists()

    (out / "gate.json").write_text(saved)  # the old promote verdict back beside the new weights
    refused = _hpo("publish", "--registry", str(registry), "--from", str(out))
    assert refused.returncode == 2 and "are not the ones the gate promoted" in refused.stderr
    assert not registry.exists()


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 12 MiB tmpfs (root only: skipped elsewhere), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_real_full_disk_stops_with_one_line_and_resumes_once_space_is_freed(tmp_path: Path, tiny_disk: Path):
    raw = small_config(tmp_path)
    raw["search"].update(n_trials=3, pruner="none", storage=f"sqlite:///{tmp_path / 'study.db'}")  # study off the disk
    raw["output"] = {"dir": str(tiny_disk / "out"), "keep_all_adapters": True}
    config = write_config(tmp_path, raw)
    first = _hpo("search", "-c", str(config), "--n-trials", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    filler = tiny_disk / f"filler-{uuid.uuid4().hex}"
    free = shutil.disk_usage(tiny_disk).free
    with filler.open("wb") as handle:  # the disk fills up (a real ENOSPC, no drill)
        handle.write(b"\0" * max(free - 4096, 0))
    full = _hpo("search", "-c", str(config))
    assert full.returncode == 1, full.stderr[-2000:]
    error = full.stderr.strip().splitlines()[-1]
    assert error.startswith("error: output.dir: no space left on the device while saving trial"), full.stderr[-3000:]
    assert "run the same command again to resume" in error and "Traceback" not in full.stderr
    assert not list((tiny_disk / "out" / "trials").glob(".*.partial"))  # no half-written adapter
    filler.unlink()
    resumed = _hpo("search", "-c", str(config))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads((tiny_disk / "out" / "summary.json").read_text())
    assert summary["n_trials"] == 3
    trials = summary["trials"]  # the trial that met the full disk failed with that cause; the others completed
    assert [t["state"] for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"], trials
    assert "no space left on device" in trials[1]["error"].lower()
    assert RunLayout(tiny_disk / "out").foreign_entries() == []


def test_a_max_length_that_keeps_no_completion_is_refused_before_any_worker_starts(tmp_path: Path):
    raw = small_config(tmp_path, train={"max_length": 8})
    raw["search"]["workers"] = 1
    config = write_config(tmp_path, raw)
    proc = _hpo("search", "-c", str(config))
    assert proc.returncode == 2, proc.stderr[-2000:]
    found = re.fullmatch(
        r"error: train\.max_length: 8 tokens keep no completion token of any training row \(the prompts are "
        r"longer\); raise it to at least (\d+)",
        proc.stderr.strip().splitlines()[-1],  # after the demo model's build lines, when this session builds it
    )
    assert found and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()  # no workers/ folder, no log: nothing started, nothing written

    # The bound it names is exact for the cut a trial makes: one token less keeps no row, that many keep some.
    cfg = load_config(config)
    rows = load_splits(cfg.data).train
    tokenized = datasets.Dataset.from_dict(tokenize_rows(rows, load_tokenizer(cfg.model), cfg.data))
    needed = int(found[1])
    assert len(trial_train_dataset(tokenized, {"max_length": needed}, cfg.data.max_length)) >= 1
    with pytest.raises(TrialError, match="no training row keeps a completion token"):
        trial_train_dataset(tokenized, {"max_length": needed - 1}, cfg.data.max_length)


def test_a_full_disk_under_the_study_storage_says_no_space_not_a_bad_url(tiny_disk: Path):
    folder = tiny_disk / "db"
    folder.mkdir()
    filler = (tiny_disk / "filler").open("wb", buffering=0)
    with filler, pytest.raises(OSError, match="No space left on device"):  # a real ENOSPC: no free block left
        while True:
            filler.write(b"\0" * (1 << 16))
    with pytest.raises(OutputError) as caught:
        open_storage(f"sqlite:///{folder / 'study.db'}")
    assert str(caught.value) == (
        f"search.storage: no space left on device: {folder}; free space and run the same command again"
    )
    assert caught.value.exit_code == 1  # not a config mistake (exit 2): the same command works once there is room


def _bad(raw: dict, mutation: str, tmp_path: Path) -> None:
    if mutation == "no metrics":
        raw["evaluate"]["metrics"] = []
    elif mutation == "exact match on text":
        raw["data"]["format"] = "text"
    elif mutation == "unreported objective":
        raw["search"]["objective"] = {"metric": "eval_acc"}
    elif mutation == "reduction factor 1":
        raw["search"]["pruner_options"] = {"reduction_factor": 1}
    elif mutation == "fractional int step":
        raw["search"]["space"]["lora_r"] = {"low": 2, "high": 16, "step": 2.5}
    elif mutation == "duplicate forgetting names":
        raw["gate"]["forgetting"] = raw["gate"]["forgetting"] * 2
    elif mutation == "unsafe forgetting name":
        raw["gate"]["forgetting"][0]["name"] = "../../x"
    elif mutation == "absurd budget":
        raw["search"]["budget"] = {"max_steps": 10**9, "eval_every": 10}


MUTATIONS = {
    "no metrics": "evaluate.metrics: name at least one metric",
    "exact match on text": "needs prompts, and data.format text has none",
    "unreported objective": "search.objective.metric: the trainer never reports 'eval_acc'",
    "reduction factor 1": "search.pruner_options.reduction_factor: must be a whole number >= 2",
    "fractional int step": "step must be a whole number > 0",
    "duplicate forgetting names": "forgetting name 'copy' is used twice",
    "unsafe forgetting name": "must be letters, digits",
    "absurd budget": "raise search.budget.max_steps_limit",
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_bad_input_exits_2_before_the_search_with_nothing_written(tmp_path: Path, mutation: str):
    raw = small_config(tmp_path)
    _bad(raw, mutation, tmp_path)
    proc = _hpo("run", "-c", str(write_config(tmp_path, raw)))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert MUTATIONS[mutation] in error_line(proc.stderr)
    assert not (tmp_path / "out").exists()


def test_more_bad_input_before_anything_is_written(tmp_path: Path):
    config = write_config(tmp_path, small_config(tmp_path))
    typo = _hpo("run", "-c", str(config), env={**os.environ, "HPO_ACTION_FAULTS": "exti@1"})
    assert typo.returncode == 2 and "HPO_ACTION_FAULTS: unknown drill 'exti@1'" in typo.stderr
    champion = tmp_path / "champion.jsonl"
    champion.write_text('{"id": "nope", "exact_match": true, "loss": 1.0}\n')
    wrong_ids = _hpo("run", "-c", str(config), "--champion-predictions", str(champion))
    assert wrong_ids.returncode == 2 and "these predictions are not for this test split" in wrong_ids.stderr
    duplicate = tmp_path / "dup.yaml"
    duplicate.write_text(config.read_text() + "\nsearch:\n  n_trials: 2\n")  # a second `search:` section
    twice = _hpo("run", "-c", str(duplicate))
    assert twice.returncode == 2 and "duplicate key 'search'" in twice.stderr
    assert not (tmp_path / "out").exists()
