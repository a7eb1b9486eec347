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


def test_quickstart_finishes_with_pruned_trials_and_resumes_without_new_ones(tmp_path: Path):
    started = time.monotonic()
    first = _run(tmp_path)
    print(f"quickstart took {time.monotonic() - started:.0f} s")
    assert first.returncode == 0, first.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    states = Counter(t.state.name for t in study.trials)
    assert states["COMPLETE"] + states["PRUNED"] + states["FAIL"] >= 12, states
    assert states["PRUNED"] >= 1, states
    assert states["RUNNING"] == 0, states
    values = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    assert max(values) > 3 * min(values)  # a clear spread between the worst and the best trial
    assert (tmp_path / "best" / "adapter_model.safetensors").is_file()
    gate = json.loads((tmp_path / "gate.json").read_text())
    assert gate["decision"] in ("promote", "reject", "inconclusive")
    assert gate["primary"]["metric"] == "exact_match" and gate["primary"]["n"] == 200
    assert [row["name"] for row in gate["forgetting"]] == ["copy"]
    assert f"gate: {gate['decision'].upper()}" in first.stdout

    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(optuna.load_study(study_name=summary.study_name, storage=storage).trials) == len(study.trials)
