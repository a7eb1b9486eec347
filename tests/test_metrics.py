"""The metric registry: built-ins, one direction rule, and a metric a user adds from their own module."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpo_action.config import parse_config
from hpo_action.errors import ConfigError
from hpo_action.judge.evaluate import EvalSettings, score_rows
from hpo_action.judge.gate import gate, pair
from hpo_action.judge.predictions import read_predictions, write_predictions
from hpo_action.metrics import BUILTIN, metric_direction, metric_kind, resolve_metric
from hpo_action.train.models import load_base_model

from .helpers import QUICKSTART, small_config


def test_builtins_carry_kind_and_direction():
    assert {name: (m.kind, m.direction) for name, m in BUILTIN.items()} == {
        "loss": ("score", "minimize"),
        "perplexity": ("score", "minimize"),
        "exact_match": ("boolean", "maximize"),
        "choice_accuracy": ("boolean", "maximize"),
    }


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("loss", "minimize"),
        ("eval_loss", "minimize"),
        ("eval_perplexity", "minimize"),  # the two old rules disagreed here
        ("exact_match", "maximize"),
        ("eval_exact_match", "maximize"),
        ("eval_mean_token_accuracy", "maximize"),
        ("eval_entropy", "minimize"),
        ("acc", "maximize"),
    ],
)
def test_one_direction_rule_for_objectives_and_the_gate(name: str, direction: str):
    assert metric_direction(name) == direction
    cfg = parse_config(
        {"model": {"name": "m"}, "data": {"train": "t.jsonl"}, "search": {"objective": {"metric": name}}}
    )
    assert cfg.search.objective.direction == direction
    assert metric_direction(name, "maximize") == "maximize"


def test_unknown_and_broken_metrics_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="unknown metric 'exact'; did you mean 'exact_match'"):
        resolve_metric("exact")
    with pytest.raises(ConfigError, match=r"cannot import 'tests\.no_such_module:X'"):
        resolve_metric("tests.no_such_module:X")
    with pytest.raises(ConfigError, match="is not a metric"):
        resolve_metric("tests.user_metrics:NotAMetric")
    raw = small_config(tmp_path)
    raw["evaluate"] = {"metrics": ["tests.user_metrics:Nope"]}
    with pytest.raises(ConfigError, match=r"evaluate\.metrics"):
        parse_config(raw)


@pytest.mark.slow
def test_a_user_metric_is_scored_written_and_gated(tmp_path: Path):
    spec = "tests.user_metrics:ContainsAnswer"
    raw = small_config(tmp_path, evaluate={"metrics": [spec, "tests.user_metrics:OutputLength", "exact_match"]})
    cfg = parse_config(raw, base_dir=tmp_path)
    assert cfg.primary_metric == "contains_answer"
    assert metric_kind("contains_answer") == "boolean" and metric_direction("output_length") == "minimize"
    base = load_base_model(cfg.model)
    rows = [json.loads(line) for line in (QUICKSTART / "forget_copy.jsonl").read_text().splitlines()[:24]]
    records = score_rows(base.model, base.tokenizer, rows, cfg.data, EvalSettings.from_config(cfg.evaluate))
    assert {"id", "contains_answer", "output_length", "exact_match", "output"} == set(records[0])
    for record in records:  # a lenient match is right whenever the exact one is
        assert record["contains_answer"] or not record["exact_match"]
        assert record["output_length"] == len(record["output"])
    write_predictions(records, tmp_path / "a.jsonl", {"metrics": [spec]})
    flipped = [{**r, "contains_answer": not r["contains_answer"]} for r in records]
    write_predictions(flipped, tmp_path / "b.jsonl", {"metrics": [spec]})
    paired = pair(read_predictions(tmp_path / "a.jsonl"), read_predictions(tmp_path / "b.jsonl"), "contains_answer")
    decision = gate(paired, [], cfg.gate)
    assert paired.boolean and decision.primary.test == "mcnemar-midp"
