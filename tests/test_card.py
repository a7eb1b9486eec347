"""The model card: it parses as a Hub card and carries the gate's evidence in its metadata and body."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import ModelCard

from hpo_action.config import parse_config
from hpo_action.ship.card import github_run_url, render_card

from .conftest import promoted_decision

GATE = promoted_decision()


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "plots").mkdir()
    (run / "plots" / "optimization_history.png").write_bytes(b"\x89PNG")
    (run / "best" / "params.json").write_text(json.dumps({"trial": 3, "value": 0.1, "params": {"lora_r": 8}}))
    summary = {
        "sampler": "tpe",
        "pruner": "hyperband",
        "objective": {"metric": "eval_loss", "direction": "minimize"},
        "states": {"COMPLETE": 5, "PRUNED": 7},
        "n_trials": 12,
        "total_steps": 420,
        "best": {"number": 3, "value": 0.1},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_card_parses_and_carries_the_evidence(tmp_path: Path):
    cfg = parse_config({"model": {"name": "org/base-model"}, "data": {"train": "t.jsonl", "test": "org/ds"}})
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_RUN_ID": "42",
    }
    text = render_card(cfg, _run_dir(tmp_path), GATE, "me/adapter", champion_version=None, env=env)
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
    assert "| `lora_r` | 8 |" in body
    assert "| 95 | 85 | 5 | 15 |" in body  # the paired outcomes
    assert "mcnemar-midp" in body and f"| {GATE.primary.bound:.4g} |" in body
    assert "| ✓ | copy | exact_match | 300 |" in body
    assert "- ✓ exact_match: better by +0.4" in body
    assert "![Optimization history](plots/optimization_history.png)" in body
    assert "https://github.com/o/r/actions/runs/42" in body
    assert "against the base model" in body


def test_run_url_only_inside_github_actions():
    assert github_run_url({}) is None
    assert github_run_url({"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "s"}) is None
