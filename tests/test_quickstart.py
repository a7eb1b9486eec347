"""The README's quickstart, exactly as a user runs it: the end-to-end check of every CI run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from .conftest import QUICKSTART

pytestmark = pytest.mark.slow


def _run(output: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hpo_action", "run", "-c", str(QUICKSTART / "hpo.yaml"), "--output", str(output)]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def test_quickstart_learns_the_shift_keeps_copy_promotes_and_resumes_without_new_trials(tmp_path: Path):
    started = time.monotonic()
    first = _run(tmp_path)
    print(f"quickstart took {time.monotonic() - started:.0f} s")
    assert first.returncode == 0, first.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    states = Counter(t.state.name for t in study.trials)
    assert states["COMPLETE"] + states["PRUNED"] + states["FAIL"] == 10, states  # the trial count ends it, no clock
    assert states["RUNNING"] == 0, states
    assert all("replay_ratio" in t.params and "kl_to_base" in t.params for t in study.trials)  # remedies searched
    assert (tmp_path / "best" / "adapter_model.safetensors").is_file()
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["decision"] == "promote", gate["reasons"]
    assert gate["primary"]["metric"] == "exact_match" and gate["primary"]["n"] == 200
    assert gate["primary"]["candidate"] >= 0.8  # it learned the shift...
    (copy,) = gate["forgetting"]
    assert copy["name"] == "copy" and copy["status"] == "passed"  # ...and kept copy within the margin
    assert copy["delta"] > -copy["margin"]
    assert "gate: PROMOTE" in first.stdout
    report = (tmp_path / "report.md").read_text()
    assert "trade-off: trial #" in report  # the chosen trial's forgetting on the probes

    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(optuna.load_study(study_name=summary.study_name, storage=storage).trials) == len(study.trials)
