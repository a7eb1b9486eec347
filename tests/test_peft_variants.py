"""PEFT and optimizer variants as trial parameters, on the real tiny model: each trains, leaves the base weights
bit-identical, and saves an adapter that loads on the ORIGINAL base model (PiSSA and OLoRA converted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hpo_action.config import parse_config
from hpo_action.data.loading import load_splits
from hpo_action.data.tokenize import tokenize_splits
from hpo_action.judge.evaluate import EvalSettings, score_rows
from hpo_action.judge.predictions import read_predictions
from hpo_action.pipeline import run
from hpo_action.search.space import trial_defaults
from hpo_action.train.models import load_base_model
from hpo_action.train.optimizers import build_optimizer, layerwise_groups, sft_arguments, trial_train_dataset
from hpo_action.train.trial import TrialRunner

from .helpers import small_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lora_runner(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrialRunner, dict]:
    tmp = tmp_path_factory.mktemp("variants")
    cfg = parse_config(small_config(tmp, search={"budget": {"max_steps": 4, "eval_every": 2}}), base_dir=tmp)
    base = load_base_model(cfg.model)
    train, validation, _ = tokenize_splits(load_splits(cfg.data), base.tokenizer, cfg.data, tmp / "cache")
    return TrialRunner(cfg, base, train, validation), {**trial_defaults(cfg), "learning_rate": 1e-2}


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ({"use_rslora": True}, {"use_rslora": True, "r": 16}),
        ({"use_dora": True}, {"use_dora": True, "r": 16}),
        ({"init_lora_weights": "pissa"}, {"init_lora_weights": True, "r": 32}),  # converted: rank 2r
        ({"init_lora_weights": "olora"}, {"init_lora_weights": True, "r": 32}),
        ({"init_lora_weights": "gaussian"}, {"init_lora_weights": "gaussian", "r": 16}),
        ({"target_modules": "attention"}, {"r": 16}),
        (
            {"loraplus_lr_ratio": 16.0, "lr_scheduler_type": "cosine_with_min_lr", "neftune_noise_alpha": 5.0},
            {"r": 16},
        ),
        ({"max_length": 24, "packing": True}, {"r": 16}),
    ],
    ids=["rslora", "dora", "pissa", "olora", "gaussian", "attention", "loraplus+min_lr+neftune", "packing"],
)
def test_each_variant_trains_saves_and_leaves_the_base_bit_identical(lora_runner, tmp_path, variant, expected):
    runner, params = lora_runner
    before = _state(runner.base.model)
    with torch.no_grad():
        ids = torch.tensor([[5, 20, 30, 40, 50, 60]])
        base_logits = runner.base.model(ids).logits
    result = runner.run({**params, **variant}, save_to=lambda _: tmp_path / "adapter")
    assert result.steps == 4 and len(result.train_curve) == 2
    after = runner.base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # PiSSA/OLoRA rewrote W, and it was given back
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert {key: config[key] for key in expected} == expected
    if variant.get("target_modules") == "attention":
        assert config["target_modules"] and all(".self_attn." in name for name in config["target_modules"])
    from peft import PeftModel

    loaded = PeftModel.from_pretrained(runner.base.model, str(tmp_path / "adapter"))  # on the original base
    with torch.no_grad():
        adapted = loaded(ids).logits
    runner.base.model = loaded.unload()
    assert not torch.allclose(adapted, base_logits)  # the adapter is there and changes the output


def test_pissa_adapter_on_the_original_base_equals_the_trained_model(lora_runner, tmp_path):
    """The conversion is exact up to float rounding: W_res + B·A (trained) = W + ΔW (converted, rank 2r)."""
    from peft import PeftModel

    runner, params = lora_runner
    ids = torch.tensor([[5, 20, 30, 40, 50, 60, 70]])
    seen: dict[str, torch.Tensor] = {}

    def keep_logits(result):
        model = runner.base.model  # wrapped in place by the PEFT model during the trial
        with torch.no_grad():
            seen["trained"] = model(ids).logits
        return tmp_path / "pissa"

    runner.run({**params, "init_lora_weights": "pissa"}, save_to=keep_logits)
    loaded = PeftModel.from_pretrained(runner.base.model, str(tmp_path / "pissa"))
    loaded.eval()
    with torch.no_grad():
        converted = loaded(ids).logits
    runner.base.model = loaded.unload()
    assert torch.allclose(converted, seen["trained"], atol=1e-4)


def test_lora_plus_gives_the_b_matrices_a_higher_rate(lora_runner):
    from peft import get_peft_model

    from hpo_action.train.peft_variants import lora_config

    runner, params = lora_runner
    args = runner._sft_config({**params, "loraplus_lr_ratio": 16.0}, "/tmp/unused")
    model = get_peft_model(runner.base.model, lora_config(params, runner.base.config, runner.base.model))
    try:
        optimizer = build_optimizer(model, {**params, "loraplus_lr_ratio": 16.0}, args)
        rates = {group["lr"] for group in optimizer.param_groups if group["params"]}
        assert rates == {1e-2, 16 * 1e-2}
        assert build_optimizer(model, params, args) is None  # ratio 1: the trainer's own optimizer
    finally:
        runner.base.model = model.unload()


def test_sft_arguments_and_per_trial_lengths(lora_runner):
    runner, params = lora_runner
    arguments = sft_arguments({**params, "lr_scheduler_type": "cosine_with_min_lr", "min_lr_rate": 0.2}, 64)
    assert arguments["lr_scheduler_kwargs"] == {"min_lr_rate": 0.2} and arguments["neftune_noise_alpha"] is None
    assert sft_arguments({**params, "neftune_noise_alpha": 5}, 64)["neftune_noise_alpha"] == 5.0
    cut = trial_train_dataset(runner.train_dataset, {**params, "max_length": 16}, 64)
    assert max(len(ids) for ids in cut["input_ids"]) == 16 and len(cut) <= len(runner.train_dataset)
    packed = trial_train_dataset(runner.train_dataset, {**params, "packing": True, "max_length": 64}, 64)
    assert len(packed) < len(runner.train_dataset) / 2 and max(len(ids) for ids in packed["input_ids"]) <= 64
    assert sum(map(sum, packed["seq_lengths"])) == sum(len(ids) for ids in runner.train_dataset["input_ids"])


def test_packing_restarts_positions_per_example_and_leaves_validation_whole(lora_runner, tmp_path):
    from transformers import TrainerCallback

    runner, params = lora_runner
    packed, cut = {**params, "packing": True}, {**params, "max_length": 16, "packing": True}
    model = runner.base.attach(packed)
    try:
        trainer = runner._trainer(model, packed, str(tmp_path), [TrainerCallback()])
        row = next(row for row in trainer.train_dataset if len(row["seq_lengths"]) > 1)
        positions = trainer.data_collator([row])["position_ids"][0].tolist()
        assert trainer.padding_free and positions.count(0) == len(row["seq_lengths"])  # restart per example
        trainer = runner._trainer(model, cut, str(tmp_path), [TrainerCallback()])
        assert max(len(ids) for ids in trainer.train_dataset["input_ids"]) <= 16
        assert trainer.eval_dataset["input_ids"] == runner.eval_dataset["input_ids"]  # never cut or packed
        assert max(len(ids) for ids in trainer.eval_dataset["input_ids"]) > 16
    finally:
        runner.base.detach(model)


def test_layerwise_decay_gives_lower_layers_smaller_rates(tmp_path):
    cfg = parse_config(small_config(tmp_path, model={"method": "full"}), base_dir=tmp_path)
    base = load_base_model(cfg.model)
    groups = layerwise_groups(base.model, 1e-3, 0.5, 0.01)
    by_name = {}
    names = {id(p): n for n, p in base.model.named_parameters()}
    for group in groups:
        for param in group["params"]:
            by_name[names[id(param)]] = (group["lr"], group["weight_decay"])
    assert by_name["model.layers.1.self_attn.q_proj.weight"] == (1e-3, 0.01)  # the top layer: the full rate
    assert by_name["model.layers.0.self_attn.q_proj.weight"] == (5e-4, 0.01)
    assert by_name["model.embed_tokens.weight"] == (2.5e-4, 0.01)  # below the first layer
    assert by_name["model.norm.weight"] == (1e-3, 0.0)  # final norm at the top; no decay on norms
    assert by_name["model.layers.0.input_layernorm.weight"] == (5e-4, 0.0)
    # The demo model ties its head to the embeddings: one matrix, trained at the embeddings' (lowest) rate.
    assert base.model.lm_head.weight is base.model.model.embed_tokens.weight
    assert _rate_of(groups, base.model.lm_head.weight) == 2.5e-4


def test_layerwise_decay_trains_an_untied_head_at_the_full_rate():
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2}
    model = LlamaForCausalLM(LlamaConfig(vocab_size=40, num_hidden_layers=3, tie_word_embeddings=False, **shape))
    groups = layerwise_groups(model, 1e-3, 0.5, 0.01)
    assert _rate_of(groups, model.lm_head.weight) == 1e-3
    assert _rate_of(groups, model.model.embed_tokens.weight) == 1e-3 * 0.5**3


def _rate_of(groups: list[dict], param: torch.nn.Parameter) -> float:
    (rate,) = [group["lr"] for group in groups if any(p is param for p in group["params"])]
    return rate


@pytest.mark.parametrize("variant", [{"use_dora": True}, {"use_rslora": True}, {"init_lora_weights": "pissa"}])
def test_published_variant_loads_on_the_original_base_and_reproduces_its_predictions(tmp_path: Path, variant):
    from peft import PeftModel

    raw = small_config(
        tmp_path,
        search={"n_trials": 1, "pruner": "none", "budget": {"max_steps": 8, "eval_every": 4}, "space": {}},
        train={**variant, "learning_rate": 1.5e-2},
        evaluate={"metrics": ["loss", "exact_match"]},
        gate={"forgetting": []},
        registry={"uri": str(tmp_path / "registry")},
    )
    lines = (tmp_path / "test.jsonl").read_text().splitlines()
    (tmp_path / "test.jsonl").write_text("\n".join(lines[:60]) + "\n")
    cfg = parse_config(raw, base_dir=tmp_path)
    assert run(cfg).promote
    version = tmp_path / "registry" / "versions" / "1"
    original = load_base_model(cfg.model)  # a fresh load: the base as published, never touched by a trial
    model = PeftModel.from_pretrained(original.model, str(version))
    rows = [json.loads(line) for line in lines[:60]]
    with torch.no_grad():
        records = score_rows(model, original.tokenizer, rows, cfg.data, EvalSettings.from_config(cfg.evaluate))
    assert {r["id"]: r for r in records} == read_predictions(version / "predictions" / "test.jsonl")
    params = json.loads((version / "params.json").read_text())["params"]
    assert all(params[key] == value for key, value in variant.items())
    card = (version / "README.md").read_text()
    assert all(f"| {key} | {value} |" in card for key, value in variant.items())
