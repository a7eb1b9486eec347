"""lm-eval forgetting benchmarks on the tiny demo model with a local multiple-choice task over local data."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-eval is not installed: pip install 'hpo-action[lm-eval]'")

from hpo_action.config import ForgettingBenchmark, ModelConfig
from hpo_action.errors import ConfigError
from hpo_action.judge.gate import pair
from hpo_action.judge.lm_eval_tasks import _per_sample, score_lm_eval
from hpo_action.train.models import BaseModel, load_base_model

from .helpers import ROOT

TASKS = ROOT / "tests" / "data" / "lm_eval"
TASK = "hpo_copy_choice"
LIMIT = 24


@pytest.fixture(scope="module")
def base(_demo_cache: Path) -> BaseModel:
    return load_base_model(ModelConfig(name="hpo-action/tiny-demo"))


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The task YAML names its data relative to the working directory, as lm-eval resolves it."""
    monkeypatch.chdir(ROOT)


def benchmark(**overrides: object) -> ForgettingBenchmark:
    fields = {"name": "copy", "kind": "lm_eval", "tasks": [TASK], "include_path": str(TASKS), "limit": LIMIT}
    return ForgettingBenchmark(**{**fields, "metric": "acc", **overrides})


def test_scores_each_sample_as_a_boolean_keyed_by_task_and_doc_id(base: BaseModel) -> None:
    random.seed(7)
    expected_next = random.random()
    random.seed(7)
    base.model.train()

    scores = score_lm_eval(base.model, base.tokenizer, benchmark(), batch_size=8)

    assert list(scores) == [f"{TASK}/{i}" for i in range(LIMIT)]
    assert all(set(row) == {"id", "acc"} and isinstance(row["acc"], bool) for row in scores.values())
    assert sum(row["acc"] for row in scores.values()) / LIMIT >= 0.9  # the base model can copy
    assert random.random() == expected_next  # lm-eval's global seeding did not leak out
    assert base.model.training
    base.model.eval()


def test_two_runs_agree_and_pair_for_mcnemar(base: BaseModel) -> None:
    first = score_lm_eval(base.model, base.tokenizer, benchmark())
    second = score_lm_eval(base.model, base.tokenizer, benchmark())

    assert first == second
    paired = pair(first, second, "acc")
    assert paired.boolean and len(paired.candidate) == LIMIT
    assert paired.candidate == paired.reference


def test_a_peft_wrapped_model_is_scored_like_its_base(base: BaseModel) -> None:
    from peft import LoraConfig, get_peft_model

    reference = score_lm_eval(base.model, base.tokenizer, benchmark(limit=8))
    fresh = load_base_model(ModelConfig(name="hpo-action/tiny-demo"))
    wrapped = get_peft_model(fresh.model, LoraConfig(r=4, target_modules="all-linear"))  # B = 0: same outputs

    assert score_lm_eval(wrapped, fresh.tokenizer, benchmark(limit=8)) == reference


def test_unknown_metric_names_the_available_ones(base: BaseModel) -> None:
    with pytest.raises(
        ConfigError, match=r"gate\.forgetting\[copy\]\.metric: .* no per-sample metric 'f1'; it has acc"
    ):
        score_lm_eval(base.model, base.tokenizer, benchmark(metric="f1", limit=2, margin=0.1))


def test_missing_package_names_the_extra(base: BaseModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ConfigError, match=r"gate\.forgetting\[copy\]: kind lm_eval needs lm-eval: pip install"):
        score_lm_eval(base.model, base.tokenizer, benchmark())


def sample(doc_id: int, value: object, filter_name: str = "none") -> dict[str, object]:
    return {"doc_id": doc_id, "filter": filter_name, "metrics": ["exact_match"], "exact_match": value}


def test_filters_and_value_types() -> None:
    two_filters = {"gsm": [sample(0, 1.0, "strict"), sample(0, 0.0, "flexible"), sample(1, 0.0, "strict")]}
    with pytest.raises(ConfigError, match=r"several filters; use one of exact_match,flexible, exact_match,strict"):
        _per_sample(two_filters, "exact_match", "here")
    with pytest.raises(ConfigError, match=r"task 'gsm' has no filter 'strickt'; use one of"):
        _per_sample(two_filters, "exact_match,strickt", "here")
    chosen = _per_sample(two_filters, "exact_match,strict", "here")
    assert chosen == {
        "gsm/0": {"id": "gsm/0", "exact_match,strict": True},
        "gsm/1": {"id": "gsm/1", "exact_match,strict": False},
    }
    # a binary-named metric with a fractional value stays a number, on every sample alike
    assert _per_sample({"t": [sample(0, 0.5), sample(1, 1.0)]}, "exact_match", "here")["t/1"]["exact_match"] == 1.0
    with pytest.raises(ConfigError, match="computed over the whole corpus"):
        _per_sample({"t": [sample(0, ("gold", "pred"))]}, "exact_match", "here")


@pytest.mark.slow
def test_run_gates_an_lm_eval_forgetting_benchmark(tmp_path: Path) -> None:
    from hpo_action.config import parse_config
    from hpo_action.judge.predictions import read_predictions
    from hpo_action.pipeline import run

    from .helpers import small_config

    lm_eval = {
        "name": "copy_choice",
        "kind": "lm_eval",
        "tasks": [TASK],
        "include_path": str(TASKS),
        "limit": LIMIT,
        "metric": "acc",
        "margin": 0.1,
    }
    cfg = parse_config(
        small_config(tmp_path, gate={"forgetting": [lm_eval]}, search={"n_trials": 2}), base_dir=tmp_path
    )
    result = run(cfg)
    (row,) = result.forgetting
    assert (row.name, row.metric, row.reference, row.n) == ("copy_choice", "acc", 1.0, LIMIT)
    scored = read_predictions(Path(cfg.output.dir) / "predictions" / "copy_choice.candidate.jsonl")
    assert len(scored) == LIMIT  # the gate's candidate side is the trained model's lm-eval run, per sample
    assert row.candidate == pytest.approx(sum(float(r["acc"]) for r in scored.values()) / LIMIT)
