"""A finished study opens in optuna-dashboard: served on loopback (an ephemeral port) over the run's own study.db,
its API lists the study and every trial with the attributes a person reads there: fold values, forgetting deltas,
and the error of a failed trial."""

from __future__ import annotations

import json
import threading
import urllib.request
import wsgiref.simple_server
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hpo_action.config import parse_config
from hpo_action.pipeline import search

from .helpers import small_config

pytestmark = pytest.mark.slow

optuna_dashboard = pytest.importorskip(
    "optuna_dashboard", reason="optuna-dashboard is not installed: pip install -e '.[dev]' (or '.[dashboard]')"
)


class _Quiet(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def dashboard(storage: str) -> Iterator[str]:
    """optuna-dashboard's WSGI app (what its `optuna-dashboard` command serves) on 127.0.0.1, port 0."""
    server = wsgiref.simple_server.make_server("127.0.0.1", 0, optuna_dashboard.wsgi(storage), handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as answer:
        return json.loads(answer.read())


def test_a_finished_study_opens_in_optuna_dashboard_with_its_trial_attributes(tmp_path: Path, monkeypatch):
    raw = small_config(
        tmp_path,
        data={"validation_strategy": "kfold", "k": 2},
        search={
            "n_trials": 3,
            "pruner": "none",
            "workers": 1,  # a worker loads the forgetting probes itself, as the in-process search does
            "forgetting_constraint": True,
            "forgetting_probe_size": 16,
            "budget": {"max_steps": 2, "eval_every": 1},
        },
    )
    monkeypatch.setenv("HPO_ACTION_FAULTS", "raise@2")  # trial 2 fails, as a crashing trial does
    summary = search(parse_config(raw, base_dir=tmp_path))
    assert summary.states == {"COMPLETE": 2, "FAIL": 1}, summary.states

    with dashboard(f"sqlite:///{tmp_path / 'out' / 'study.db'}") as url:
        (study,) = get(f"{url}/api/studies")["study_summaries"]
        detail = get(f"{url}/api/studies/{study['study_id']}")

    assert study["study_name"] == summary.study_name
    trials = {trial["number"]: trial for trial in detail["trials"]}
    assert [trials[n]["state"] for n in range(3)] == ["Complete", "Complete", "Fail"]
    for number in (0, 1):
        attrs = {a["key"]: a["value"] for a in trials[number]["user_attrs"]}
        folds = json.loads(attrs["fold_values"])
        assert len(folds) == 2 and all(isinstance(v, float) for v in folds)
        assert set(json.loads(attrs["forgetting_drop"])) == {"copy"}  # the probe's drop against the base, per set
        assert {p["name"] for p in trials[number]["params"]} >= {"learning_rate", "lora_r"}
    failed = {a["key"]: a["value"] for a in trials[2]["user_attrs"]}
    assert "fault drill" in failed["error"]
    assert {"fold_values", "forgetting_drop", "error"} <= {a["key"] for a in detail["union_user_attrs"]}
