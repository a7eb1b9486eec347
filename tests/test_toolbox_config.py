"""The toolbox's config side: every example config loads, the variants are trial parameters (fixed or searched, in
the card's table), impossible combinations fail on load, and `init --size` follows the one guidance file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from hpo_action.cli import main
from hpo_action.config import LORA_ONLY, TRIAL_PARAMETERS, load_config, parse_config
from hpo_action.config.starting import describe_params, starting_points
from hpo_action.errors import ConfigError
from hpo_action.files import template
from hpo_action.init import sized_config, write_starter
from hpo_action.search.space import trial_defaults, warm_start_params
from hpo_action.ship.card import render_card

from .helpers import ROOT, promoted_decision, sample_summary

VARIANTS = (
    "use_rslora",
    "use_dora",
    "init_lora_weights",
    "loraplus_lr_ratio",
    "target_modules",
    "lr_scheduler_type",
    "min_lr_rate",
    "layerwise_lr_decay",
    "neftune_noise_alpha",
    "max_length",
    "packing",
)
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*/hpo.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.parent.name)
def test_every_example_config_loads(path: Path):
    load_config(path)


def test_each_toolbox_feature_has_an_example():
    names = {path.parent.name for path in EXAMPLES}
    assert {"kfold", "time_split", "peft_variants", "layerwise", "decoding", "doctor", "plan"} <= names
    assert (ROOT / "examples" / "init" / "small.yaml").is_file()


def test_variants_are_trial_parameters_searchable_and_in_the_cards_table():
    assert set(VARIANTS) <= set(TRIAL_PARAMETERS)
    assert {"use_rslora", "use_dora", "init_lora_weights", "loraplus_lr_ratio", "target_modules"} <= set(LORA_ONLY)
    cfg = load_config(ROOT / "examples" / "peft_variants" / "hpo.yaml")
    warm = warm_start_params(cfg)  # the train defaults, moved into each searched range
    assert warm["init_lora_weights"] == "default" and warm["max_length"] == 64 and warm["loraplus_lr_ratio"] == 1
    summary = sample_summary()
    best = summary.best.__class__(**{**vars(summary.best), "params": trial_defaults(cfg)})
    card = render_card(cfg, summary.__class__(**{**vars(summary), "best": best}), promoted_decision(), [], "me/x", None)
    for name in VARIANTS:
        assert f"| {name} |" in card, name


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"init_lora_weights": {"choices": ["pissa", "lora-ga"]}}, "init_lora_weights: 'lora-ga' is not a valid value"),
        ({"target_modules": {"choices": ["attention", "mlp"]}}, "target_modules: 'mlp' is not a valid value"),
        ({"loraplus_lr_ratio": {"low": 0.5, "high": 8.0}}, "loraplus_lr_ratio: 0.5 is not a valid value"),
        ({"layerwise_lr_decay": 1.5}, "layerwise_lr_decay: 1.5 is not a valid value"),
    ],
)
def test_a_value_no_trial_could_use_fails_on_load(space: dict, message: str):
    raw = {"model": {"name": "m"}, "data": {"train": "t.jsonl"}, "search": {"space": space}}
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_impossible_combinations_fail_on_load():
    raw = {
        "model": {"name": "m", "method": "qlora"},
        "data": {"train": "t.jsonl"},
        "train": {"init_lora_weights": "olora"},
    }
    with pytest.raises(ConfigError, match="rewrites the base weights"):
        parse_config(raw)
    raw = {"model": {"name": "m"}, "data": {"train": "t.jsonl", "max_length": 64}, "train": {"max_length": 128}}
    with pytest.raises(ConfigError, match=r"train\.max_length \(128\) exceeds data\.max_length \(64\)"):
        parse_config(raw)
    raw = {
        "model": {"name": "m"},
        "data": {"train": "t.jsonl"},
        "train": {"use_dora": True, "init_lora_weights": "pissa"},
    }
    with pytest.raises(ConfigError, match="PEFT cannot convert a DoRA adapter"):
        parse_config(raw)
    raw["search"] = {"space": {"init_lora_weights": {"choices": ["pissa", "default"]}}}  # some trials can run
    assert parse_config(raw).train.use_dora
    from hpo_action.errors import TrialError
    from hpo_action.train.peft_variants import lora_config

    with pytest.raises(TrialError, match="use_dora cannot be combined with init_lora_weights 'pissa'"):
        lora_config({"use_dora": True, "init_lora_weights": "pissa"}, None, None)  # the trial that draws both fails


def test_target_presets_name_attention_then_mlp_and_the_last_two_coincide_on_llama():
    import torch
    from transformers import LlamaForCausalLM

    from hpo_action.train.demo_model import demo_config
    from hpo_action.train.peft_variants import resolve_targets

    model = LlamaForCausalLM(demo_config())
    linear = {name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    attention = set(resolve_targets("attention", "all-linear", model))
    assert attention and all(".self_attn." in name for name in attention)
    assert set(resolve_targets("attention_mlp", "all-linear", model)) == linear - {"lm_head"}  # PEFT's all-linear
    assert resolve_targets("all_linear", ["q_proj"], model) == "all-linear"
    assert resolve_targets(None, ["q_proj"], model) == ["q_proj"]


def test_full_only_and_lora_only_parameters_follow_the_method():
    space = {"layerwise_lr_decay": {"low": 0.5, "high": 1.0}, "use_dora": {"choices": [False, True]}}
    raw = {"model": {"name": "m"}, "data": {"train": "t.jsonl"}, "search": {"space": space}}
    assert set(parse_config(raw).active_space()) == {"use_dora"}
    raw["model"]["method"] = "full"
    assert set(parse_config(raw).active_space()) == {"layerwise_lr_decay"}


LLAMA_70B = {  # Llama 3 70B's shape: 70.6B parameters
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "tie_word_embeddings": False,
}
QWEN_05B = {  # Qwen2.5-0.5B's shape: 0.49B parameters, head tied to the embeddings
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
}


def _model_folder(tmp_path: Path, name: str, config: dict) -> str:
    """A local model folder holding only its config.json: no weights are needed to size a starter."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_init_by_size_follows_the_guidance_file(tmp_path: Path, size: str):
    guide = starting_points()
    tier = guide.tier(size)
    write_starter(tmp_path, size=size, device="cpu")
    cfg = load_config(tmp_path / "hpo.yaml")
    guidance = yaml.safe_load(template("starting_points.yaml").read_text())
    method = "full" if size == "large" else "lora"  # the 0.4M-parameter demo model: full fine-tuning fits
    methods = guidance["methods"][method]
    assert cfg.model.method == method == guide.choose(tier, 439_936, False).method
    assert cfg.learning_rate == methods["learning_rate"]
    space = cfg.search.space
    assert (space["learning_rate"].low, space["learning_rate"].high) == tuple(methods["learning_rate_range"])
    assert set(space) == {"learning_rate", *methods["space"]}
    for key in ("warmup_ratio", "max_grad_norm", "lr_scheduler_type"):
        assert getattr(cfg.train, key) == guidance["sizes"][size][key], key
    effective = cfg.train.per_device_train_batch_size * cfg.train.gradient_accumulation_steps
    assert effective == tier.effective_batch == guidance["sizes"][size]["effective_batch"]
    assert cfg.train.per_device_train_batch_size == min(
        guidance["models"]["small"]["per_device_train_batch_size"], effective
    )
    assert cfg.search.budget.max_steps == -(-tier.epochs * tier.typical_rows // effective)
    assert cfg.search.n_trials == guidance["trials_per_parameter"] * len(space)


def test_init_infers_the_size_from_the_data_rows(tmp_path: Path, capsys):
    rows = tmp_path / "mine.jsonl"
    rows.write_text("".join(f'{{"text": "row {i}"}}\n' for i in range(2500)))
    main(["init", str(tmp_path / "project"), "--data", str(rows), "--device", "cpu"])
    cfg = load_config(tmp_path / "project" / "hpo.yaml")
    assert cfg.model.method == "lora"  # 2,500 rows: medium
    assert cfg.search.budget.max_steps == -(-3 * 2500 // 32)  # 3 epochs at an effective batch of 32
    assert "for medium data (2500 training rows)" in (tmp_path / "project" / "hpo.yaml").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["init", str(tmp_path / "other"), "--size", "small", "--data", str(rows)])
    assert exit_info.value.code == 2


def test_a_70b_model_never_gets_full_fine_tuning_and_gets_qlora_only_on_cuda(tmp_path: Path):
    model = _model_folder(tmp_path, "llama-70b", LLAMA_70B)
    for cuda, method in ((True, "qlora"), (False, "lora")):
        cfg = parse_config(yaml.safe_load(sized_config(None, 50_000, model, cuda)), base_dir=tmp_path)
        assert cfg.model.method == method and cfg.model.name == model
        assert (cfg.train.per_device_train_batch_size, cfg.train.gradient_accumulation_steps) == (1, 64)
    text = sized_config(None, 50_000, model, cuda=True)
    assert "70.6B parameters: 4-bit weights (QLoRA) on the CUDA GPU" in text
    assert "70.6B parameters, but no CUDA GPU, which QLoRA needs" in sized_config(None, 50_000, model, cuda=False)


def test_a_half_billion_model_on_little_data_gets_lora_not_qlora(tmp_path: Path):
    model = _model_folder(tmp_path, "qwen-0.5b", QWEN_05B)
    for cuda in (True, False):
        cfg = parse_config(yaml.safe_load(sized_config(None, 800, model, cuda)), base_dir=tmp_path)
        assert cfg.model.method == "lora" and cfg.learning_rate == 2e-4
        assert (cfg.train.per_device_train_batch_size, cfg.train.gradient_accumulation_steps) == (8, 2)
    assert "494M parameters (its config.json)" in sized_config(None, 800, model, False)
    large = parse_config(yaml.safe_load(sized_config(None, 20_000, model, True)), base_dir=tmp_path)
    assert large.model.method == "full" and large.learning_rate == 2e-5  # full fine-tuning fits 0.5B


def test_the_qlora_ranges_hold_the_published_recipe_inside_them():
    qlora = starting_points().methods["qlora"]
    low, high = qlora.learning_rate_range
    assert 0.05 < math.log(2e-4 / low) / math.log(high / low) < 0.95  # 2e-4 inside, not at an edge
    ranks = qlora.space["lora_r"]["choices"]
    assert min(ranks) < 64 < max(ranks) and qlora.train["lora_r"] == 64
    alphas = qlora.space["lora_alpha"]["choices"]
    assert min(alphas) < 16 < max(alphas) and qlora.train["lora_alpha"] == 16


def test_init_sizes_by_the_model_from_the_command_line(tmp_path: Path):
    model = _model_folder(tmp_path, "llama-70b", LLAMA_70B)
    main(["init", str(tmp_path / "p"), "--size", "large", "--model", model, "--device", "cuda"])
    cfg = load_config(tmp_path / "p" / "hpo.yaml")
    assert (cfg.model.name, cfg.model.method) == (model, "qlora")
    with pytest.raises(SystemExit) as exit_info:
        main(["init", str(tmp_path / "q"), "--size", "large", "--model", str(tmp_path)])  # no config.json
    assert exit_info.value.code == 2


def test_the_committed_init_examples_are_what_init_writes():
    for size in ("small", "large"):
        assert (ROOT / "examples" / "init" / f"{size}.yaml").read_text() == sized_config(size, None), size


def test_the_readme_states_the_starting_points_the_file_holds():
    """The README describes the rule in numbers; they are the file's."""
    guide = starting_points()
    small, medium, large = guide.model_tiers
    readme = " ".join((ROOT / "README.md").read_text().split())
    limits = (describe_params(int(small.max_params)), describe_params(int(medium.max_params)))
    batches = (small, medium, large)
    stated = (
        f"({batches[0].per_device_train_batch_size} up to {limits[0]} parameters, "
        f"{batches[1].per_device_train_batch_size} up to {limits[1]}, {batches[2].per_device_train_batch_size} beyond;"
    )
    assert stated in readme
    assert f"whether full fine-tuning fits (up to {limits[0]})" in readme and small.full_fine_tuning
    assert f"QLoRA for a model over {limits[1]} on CUDA" in readme and large.quantize and not medium.quantize
    assert f"{guide.trials_per_parameter} trials per searched parameter" in readme
