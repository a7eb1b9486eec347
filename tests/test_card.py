"""The model card: it parses as a Hub card and carries the gate's evidence in its metadata and body."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard

from hpo_action.config import parse_config
from hpo_action.ship.card import github_run_url, render_card

from .helpers import promoted_decision, sample_summary

GATE = promoted_decision()


def test_card_parses_and_carries_the_evidence(tmp_path: Path):
    cfg = parse_config({"model": {"name": "org/base-model"}, "data": {"train": "t.jsonl", "test": "org/ds"}})
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "42",
    }
    plots = ["optimization_history.png"]
    text = render_card(cfg, sample_summary(), GATE, plots, "adapter", None, env=env, load_from="me/adapter")
    (tmp_path / "README.md").write_text(text)
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data
    assert data.library_name == "peft" and data.base_model == "org/base-model"
    assert data.to_dict()["base_model_relation"] == "adapter"
    assert {"lora", "trl", "sft", "hpo-action", "base_model:adapter:org/base-model"} <= set(data.tags)
    assert data.datasets == ["org/ds"]
    values = {(r.metric_type, r.dataset_name): r.metric_value for r in data.eval_results}
    assert values[("exact_match", "org/ds (held-out test split)")] == GATE.primary.candidate == 0.9
    assert values[("exact_match", "forgetting: copy")] == 1.0
    body = card.text
    assert 'PeftModel.from_pretrained(base, "me/adapter")' in body
    assert "| lora_r | 8 |" in body and "| learning_rate | 0.01 |" in body
    assert "420 training steps in all" in body
    assert "| 95 | 85 | 5 | 15 |" in body  # the paired outcomes
    assert "mcnemar-midp" in body and f"| {GATE.primary.bound:.4g} |" in body
    assert "| ✓ | copy | exact_match | 300 |" in body
    assert "- ✓ exact_match: better by +0.4" in body
    assert "![Optimization history](plots/optimization_history.png)" in body
    assert "https://github.com/o/r/actions/runs/42" in body
    assert "against the base model" in body
    # Issue 21 items 1, 4, 6: the estimand in words, bounds labelled as the test's own, what "passed" means.
    assert "delta estimates the difference in the share of examples with exact_match true" in body
    assert "one-sided 95% lower" in body and "together form a two-sided 90% interval" in body
    assert "intersection-union test" in body and "95% CI" not in body


def test_run_url_only_inside_github_actions():
    assert github_run_url({}) is None
    assert github_run_url({"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "s"}) is None


def test_a_registry_that_downloads_first_puts_its_step_before_loading():
    """An MLflow version is loaded from the folder its download returns: the card says so, with the version's page."""
    cfg = parse_config({"model": {"name": "org/base-model"}, "data": {"train": "t.jsonl", "test": "t.jsonl"}})
    fetch = "\n".join(
        [
            "import mlflow",
            "",
            "# https://mlflow.example/#/models/m/versions/3",
            'path = mlflow.artifacts.download_artifacts("models:/m/3")',
        ]
    )
    text = render_card(cfg, sample_summary(), GATE, [], "m", None, env={}, load_from="models:/m/3", fetch=fetch)
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.index(fetch) < code.index("PeftModel.from_pretrained(base, path)")
    assert "AutoTokenizer.from_pretrained(path)" in code and '"models:/m/3")\n' in code


def test_a_pbt_winner_shows_its_schedule_and_the_search_that_found_it():
    """The winner's PBT schedule (its weights' lineage) is listed change by change; an Optuna card has none."""
    from dataclasses import replace

    cfg = parse_config({"model": {"name": "org/base-model"}, "data": {"train": "t.jsonl", "test": "t.jsonl"}})
    summary = sample_summary()
    schedule = [[0, {"learning_rate": 0.01, "lora_r": 8}], [20, {"learning_rate": 0.012, "lora_r": 8}]]
    winner = replace(summary.trials[1], schedule=schedule)
    pbt = replace(summary, trials=(summary.trials[0], winner), sampler="ray:random", pruner="ray:pbt")
    text = render_card(cfg, pbt, GATE, [], "m", None, env={}, load_from="me/m")
    assert "chosen by Population Based Training on Ray Tune" in text
    assert "from step 0: learning_rate 0.01, lora_r 8; from step 20: learning_rate 0.012" in text
    plain = render_card(cfg, summary, GATE, [], "m", None, env={}, load_from="me/m")
    assert "chosen by a pruned Optuna search" in plain and "PBT schedule" not in plain
