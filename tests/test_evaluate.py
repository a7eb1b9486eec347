"""Per-example scoring against the real tiny demo model: known skills, hand-computed losses, batch invariance."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from hpo_action.config import DataConfig, ModelConfig
from hpo_action.data.loading import load_rows
from hpo_action.data.tokenize import tokenize_rows
from hpo_action.errors import ConfigError, DataError
from hpo_action.judge.evaluate import (
    EvalSettings,
    adapter_sha256,
    evaluate,
    load_for_eval,
    score_rows,
)
from hpo_action.judge.predictions import meta_path, write_predictions
from hpo_action.metrics import normalize_text
from hpo_action.train.models import BaseModel, load_base_model

from .helpers import QUICKSTART

MODEL_CFG = ModelConfig(name="hpo-action/tiny-demo")
DATA_CFG = DataConfig(train="unused.jsonl")
ALL = ("loss", "exact_match", "choice_accuracy", "perplexity")


@pytest.fixture(scope="module")
def base(_demo_cache: Path) -> BaseModel:
    return load_base_model(MODEL_CFG)


def quickstart_rows(name: str, n: int) -> list[dict[str, Any]]:
    return load_rows(str(QUICKSTART / name), DATA_CFG, "data.test")[:n]


def with_choices(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row gets its completion and its reverse as choices, with the completion right."""
    return [{**row, "choices": [row["completion"], row["completion"][::-1]], "answer": 0} for row in rows]


def mean(records: list[dict[str, Any]], metric: str) -> float:
    return sum(r[metric] for r in records) / len(records)


def test_settings_reject_unknown_names_and_bad_numbers() -> None:
    with pytest.raises(ConfigError, match=r"unknown metric 'acuracy'; did you mean 'choice_accuracy'\?"):
        EvalSettings(metrics=("acuracy",))
    with pytest.raises(ConfigError, match=r"evaluate\.normalize: unknown 'upper'"):
        EvalSettings(normalize=("upper",))
    with pytest.raises(ConfigError, match=r"evaluate\.batch_size"):
        EvalSettings(batch_size=0)


def test_normalize_is_order_independent() -> None:
    steps = ("strip", "lower", "collapse_whitespace", "strip_punctuation")
    assert normalize_text("  Hello,   World! ", steps) == "hello world"
    assert normalize_text("  Hello,   World! ", steps[::-1]) == "hello world"
    assert normalize_text(" A b ", ("strip",)) == "A b"


def test_exact_match_knows_copy_but_not_shift(base: BaseModel) -> None:
    settings = EvalSettings(metrics=("exact_match",), max_new_tokens=16)
    copy = score_rows(base.model, base.tokenizer, quickstart_rows("forget_copy.jsonl", 20), DATA_CFG, settings)
    shift = score_rows(base.model, base.tokenizer, quickstart_rows("test.jsonl", 20), DATA_CFG, settings)
    assert len(copy) == len(shift) == 20
    assert mean(copy, "exact_match") >= 0.8
    assert mean(shift, "exact_match") <= 0.1
    first = copy[0]
    assert set(first) == {"id", "exact_match", "output"} and first["id"] == "forget_copy-0000"
    assert type(first["exact_match"]) is bool and first["output"] == "xbyins"


def test_loss_equals_hand_computed_cross_entropy(base: BaseModel) -> None:
    import torch
    import torch.nn.functional as F

    rows = quickstart_rows("test.jsonl", 1)
    (record,) = score_rows(base.model, base.tokenizer, rows, DATA_CFG, EvalSettings(metrics=("loss", "perplexity")))
    columns = tokenize_rows(rows, base.tokenizer, DATA_CFG)
    ids, labels = torch.tensor(columns["input_ids"]), torch.tensor(columns["labels"])
    with torch.no_grad():
        logits = base.model(input_ids=ids).logits
    expected = F.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=-100).item()
    assert (labels[0] != -100).sum().item() == len(rows[0]["completion"]) + 1  # the completion plus EOS
    assert type(record["loss"]) is float and record["loss"] == pytest.approx(expected, abs=1e-5)
    assert record["perplexity"] == pytest.approx(math.exp(record["loss"]), rel=1e-12)


def test_batched_equals_unbatched_and_runs_repeat(base: BaseModel) -> None:
    rows = with_choices(quickstart_rows("forget_copy.jsonl", 6) + quickstart_rows("test.jsonl", 6))
    one = score_rows(base.model, base.tokenizer, rows, DATA_CFG, EvalSettings(metrics=ALL, batch_size=1))
    eight = score_rows(base.model, base.tokenizer, rows, DATA_CFG, EvalSettings(metrics=ALL, batch_size=8))
    again = score_rows(base.model, base.tokenizer, rows, DATA_CFG, EvalSettings(metrics=ALL, batch_size=8))
    assert eight == again
    assert [r["id"] for r in one] == [r["id"] for r in eight] == [r["id"] for r in rows]
    for a, b in zip(one, eight, strict=True):
        assert (a["output"], a["exact_match"], a["choice_accuracy"]) == (
            b["output"],
            b["exact_match"],
            b["choice_accuracy"],
        )
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
        assert a["perplexity"] == pytest.approx(b["perplexity"], rel=1e-5)
    assert base.tokenizer.padding_side == "right" and not base.model.training  # nothing left changed


def test_choice_accuracy_picks_the_likelier_choice(base: BaseModel) -> None:
    rows = [
        {"id": "a", "prompt": "copy: abc = ", "completion": "abc", "choices": ["abc", "xyz"], "answer": 0},
        {"id": "b", "prompt": "copy: abc = ", "completion": "abc", "choices": ["xyz", "abc"], "answer": "abc"},
        {"id": "c", "prompt": "copy: abc = ", "completion": "abc", "choices": ["abc", "xyz"], "answer": 1},
        {"id": "d", "prompt": "next: c = ", "completion": "d", "choices": ["q", "d", "z"], "answer": 1},
    ]
    records = score_rows(base.model, base.tokenizer, rows, DATA_CFG, EvalSettings(metrics=("choice_accuracy",)))
    assert [r["choice_accuracy"] for r in records] == [True, True, False, True]
    assert all(type(r["choice_accuracy"]) is bool for r in records)


@pytest.mark.parametrize(
    ("extra", "message"),
    [({}, "needs 'choices'"), ({"choices": ["abc"], "answer": 3}, "needs 'answer'"), ({"choices": []}, "choices")],
)
def test_choice_accuracy_without_choices_names_the_row(base: BaseModel, extra: dict[str, Any], message: str) -> None:
    rows = [{"id": "row-7", "prompt": "copy: abc = ", "completion": "abc", **extra}]
    with pytest.raises(DataError, match=rf"row id 'row-7': choice_accuracy.*{message}"):
        score_rows(base.model, base.tokenizer, rows, DATA_CFG, EvalSettings(metrics=("choice_accuracy",)))


def test_text_rows_score_loss_but_refuse_exact_match(base: BaseModel) -> None:
    cfg = DataConfig(train="unused.jsonl", format="text")
    rows = [{"id": "t1", "text": "copy: abc = abc"}, {"id": "t2", "text": "abc: defgh"}]
    records = score_rows(base.model, base.tokenizer, rows, cfg, EvalSettings(metrics=("loss", "perplexity")))
    assert [r["id"] for r in records] == ["t1", "t2"]
    assert all(math.isfinite(r["loss"]) and r["perplexity"] == pytest.approx(math.exp(r["loss"])) for r in records)
    with pytest.raises(DataError, match="exact_match needs prompts"):
        score_rows(base.model, base.tokenizer, rows, cfg, EvalSettings(metrics=("exact_match",)))


def test_rows_without_label_tokens_are_skipped_not_nan(base: BaseModel, caplog: pytest.LogCaptureFixture) -> None:
    cfg = DataConfig(train="unused.jsonl", max_length=12)
    rows = [
        {"id": "long", "prompt": "copy: abcdefgh = ", "completion": "abcdefgh"},
        {"id": "short", "prompt": "next: c = ", "completion": "d"},
    ]
    with caplog.at_level(logging.WARNING):
        records = score_rows(base.model, base.tokenizer, rows, cfg, EvalSettings(metrics=ALL[:2]))
    assert [r["id"] for r in records] == ["short"] and math.isfinite(records[0]["loss"])
    assert "'long'" in caplog.text


def test_messages_rows_generate_after_the_chat_prompt(base: BaseModel) -> None:
    cfg = DataConfig(train="unused.jsonl", format="messages")
    rows = [
        {"id": "m", "messages": [{"role": "user", "content": "copy: abc"}, {"role": "assistant", "content": "abc"}]}
    ]
    (record,) = score_rows(base.model, base.tokenizer, rows, cfg, EvalSettings(metrics=ALL[:2], max_new_tokens=4))
    assert isinstance(record["output"], str) and len(record["output"]) <= 4
    assert math.isfinite(record["loss"]) and type(record["exact_match"]) is bool


def test_write_predictions_is_jsonl_with_meta(tmp_path: Path) -> None:
    records = [{"id": "a", "exact_match": True, "loss": 0.5, "output": "x"}, {"id": "b", "exact_match": False}]
    path = tmp_path / "out" / "preds.jsonl"
    write_predictions(records, path, {"adapter_sha256": "abc"})
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    assert meta_path(path) == tmp_path / "out" / "preds.meta.json"
    assert json.loads(meta_path(path).read_text()) == {"adapter_sha256": "abc"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["preds.jsonl", "preds.meta.json"]  # no temp files left
    with pytest.raises(ValueError):
        write_predictions([{"id": "a", "loss": float("nan")}], path, {})
    assert path.read_text().splitlines() == lines  # a failed write leaves the old file whole


def test_missing_weights_fail_before_loading(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing config\.json .*PEFT adapter or a model"):
        load_for_eval(MODEL_CFG, tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"missing adapter_model\.safetensors"):
        load_for_eval(MODEL_CFG, tmp_path)


def test_adapter_round_trip(base: BaseModel, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    rows = quickstart_rows("test.jsonl", 4)  # high loss, so the filled adapter's effect is large
    settings = EvalSettings(metrics=("loss", "exact_match"))
    base_records = score_rows(base.model, base.tokenizer, rows, DATA_CFG, settings)

    # A fresh LoRA (lora_B = 0) changes nothing; filling lora_B changes the model and the hash.
    peft_model = get_peft_model(load_base_model(MODEL_CFG).model, LoraConfig(r=4, target_modules="all-linear"))
    peft_model.save_pretrained(tmp_path / "zero")
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.constant_(param, 0.05)
    peft_model.save_pretrained(tmp_path / "filled")

    out = tmp_path / "preds.jsonl"
    zero = evaluate(MODEL_CFG, DATA_CFG, rows, settings, tmp_path / "zero", out, data_fingerprint="fp")
    meta = json.loads(meta_path(out).read_text())
    assert meta["adapter_sha256"] == adapter_sha256(tmp_path / "zero") and meta["data_fingerprint"] == "fp"
    assert meta["n"] == 4 and meta["metrics"] == ["loss", "exact_match"] and meta["settings"]["batch_size"] == 32
    assert set(meta["versions"]) == {"torch", "transformers", "peft", "hpo_action"} and meta["created"].endswith(
        "+00:00"
    )
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [r["id"] for r in rows]
    for a, b in zip(zero, base_records, strict=True):
        assert a["output"] == b["output"] and a["loss"] == pytest.approx(b["loss"], abs=1e-6)

    model, _, filled_meta = load_for_eval(MODEL_CFG, tmp_path / "filled")
    assert isinstance(model, PeftModel) and not model.training
    assert filled_meta["adapter_sha256"] not in (None, meta["adapter_sha256"])
    filled = evaluate(MODEL_CFG, DATA_CFG, rows, settings, tmp_path / "filled", None, data_fingerprint="fp")
    assert all(abs(a["loss"] - b["loss"]) > 1e-3 for a, b in zip(filled, base_records, strict=True))
