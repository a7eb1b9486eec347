"""The search-backend interface: search.backend picks the backend, the search stage writes the run's files from
the typed result whichever backend produced it, and the plots are drawn from the trial records alone."""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from hpo_action.config import parse_config
from hpo_action.layout import RunLayout
from hpo_action.report.plots import write_plots
from hpo_action.search import stage
from hpo_action.search.backend import SearchHooks, SearchRequest, SearchResult, backend_for
from hpo_action.search.summary import RunSummary, Selection, TrialRecord

from .helpers import sample_summary, small_config


def test_search_backend_picks_the_optuna_backend_by_default_and_ray_when_asked(tmp_path: Path):
    from hpo_action.search.optuna_backend.backend import OptunaBackend

    cfg = parse_config(small_config(tmp_path), base_dir=tmp_path)
    assert isinstance(backend_for(cfg), OptunaBackend)
    pytest.importorskip("ray.tune")
    from hpo_action.search.ray_backend import RayBackend

    raw = small_config(tmp_path)
    raw["search"].update(backend="ray", ray={"scheduler": "asha"})
    assert isinstance(backend_for(parse_config(raw, base_dir=tmp_path)), RayBackend)


class _FakeBackend:
    """A backend that runs nothing: it hands back a finished summary, as any backend would."""

    def __init__(self, summary: RunSummary) -> None:
        self.summary, self.requests = summary, []

    def search(self, request: SearchRequest) -> SearchResult:
        self.requests.append(request)
        return SearchResult(self.summary)


def test_the_search_stage_writes_the_run_files_from_any_backends_typed_result(tmp_path: Path, monkeypatch):
    raw = small_config(tmp_path)
    raw["search"]["storage"] = "postgresql://user:secret@db.example/hpo"  # config.yaml shows it redacted
    cfg = parse_config(raw, base_dir=tmp_path)
    fake = _FakeBackend(sample_summary())
    monkeypatch.setattr(stage, "backend_for", lambda _: fake)
    hooks = SearchHooks(*(lambda *_: None,) * 5)  # type: ignore[arg-type]
    request = SearchRequest(cfg, None, {}, Console(file=io.StringIO()), hooks, extra_trials=2)  # type: ignore[arg-type]
    result = stage.search_stage(request)
    layout = RunLayout(Path(cfg.output.dir))
    assert result.summary == fake.summary and fake.requests == [request]
    assert RunSummary.read(layout.summary) == fake.summary
    rows = list(csv.DictReader(layout.trials_csv.open()))
    assert [row["number"] for row in rows] == ["0", "1"] and rows[1]["param_lora_r"] == "8"
    written = yaml.safe_load(layout.run_config.read_text())
    assert "secret" not in written["search"]["storage"] and written["search"]["storage"].startswith("postgresql://")


def test_plots_come_from_the_trial_records(tmp_path: Path):
    summary = sample_summary()
    curve = [[3, 0.9], [6, 0.4567891]]
    trials = (summary.trials[0], replace(summary.trials[1], curve=curve))
    written = write_plots(replace(summary, trials=trials), tmp_path / "one", {"lora_r": 0.7, "learning_rate": 0.3})
    assert sorted(p.name for p in written) == [
        "intermediate_values.png",
        "optimization_history.png",
        "param_importances.png",
    ]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
    assert not (tmp_path / "one" / "pareto_front.png").exists()
    # No importances measured (the Ray backend): that plot is left out, the others stay.
    assert "param_importances.png" not in {p.name for p in write_plots(summary, tmp_path / "two")}


def test_a_multi_objective_summary_gets_its_pareto_front_plot(tmp_path: Path):
    trials = tuple(
        TrialRecord(n, "COMPLETE", a, 6, 1.0, {"lora_r": 4 * (n + 1)}, values=[a, b])
        for n, (a, b) in enumerate([(0.5, 0.02), (0.4, 0.05), (0.6, 0.06)])
    )
    objectives = [{"metric": "eval_loss", "direction": "minimize"}, {"metric": "forgetting", "direction": "minimize"}]
    summary = replace(sample_summary(), trials=trials, selection=Selection(objectives, "rule", pareto_front=[0, 1]))
    names = {p.name for p in write_plots(summary, tmp_path)}
    assert "pareto_front.png" in names and "optimization_history.png" in names
