"""The toolbox's config side: every example config loads, the variants are trial parameters (fixed or searched, in
the card's table), impossible combinations fail on load, and `init --size` follows the one guidance file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hpo_action.cli import main
from hpo_action.config import LORA_ONLY, TRIAL_PARAMETERS, load_config, parse_config
from hpo_action.config.starting import starting_points
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
        assert f"| `{name}` |" in card, name


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


def test_full_only_and_lora_only_parameters_follow_the_method():
    space = {"layerwise_lr_decay": {"low": 0.5, "high": 1.0}, "use_dora": {"choices": [False, True]}}
    raw = {"model": {"name": "m"}, "data": {"train": "t.jsonl"}, "search": {"space": space}}
    assert set(parse_config(raw).active_space()) == {"use_dora"}
    raw["model"]["method"] = "full"
    assert set(parse_config(raw).active_space()) == {"layerwise_lr_decay"}


@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_init_by_size_follows_the_guidance_file(tmp_path: Path, size: str):
    tier = starting_points().tier(size)
    write_starter(tmp_path, size=size)
    cfg = load_config(tmp_path / "hpo.yaml")
    guidance = yaml.safe_load(template("starting_points.yaml").read_text())
    assert cfg.model.method == guidance["sizes"][size]["method"] == tier.method
    assert cfg.learning_rate == guidance["sizes"][size]["learning_rate"]
    space = cfg.search.space
    assert (space["learning_rate"].low, space["learning_rate"].high) == tuple(
        guidance["sizes"][size]["learning_rate_range"]
    )
    assert set(space) == {"learning_rate", *guidance["methods"][tier.method]}
    for key in (
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "warmup_ratio",
        "weight_decay",
        "max_grad_norm",
    ):
        assert getattr(cfg.train, key) == guidance["sizes"][size][key], key
    effective = tier.per_device_train_batch_size * tier.gradient_accumulation_steps
    assert cfg.search.budget.max_steps == -(-tier.epochs * tier.typical_rows // effective)
    assert cfg.search.n_trials == guidance["trials_per_parameter"] * len(space)


def test_init_infers_the_size_from_the_data_rows(tmp_path: Path, capsys):
    rows = tmp_path / "mine.jsonl"
    rows.write_text("".join(f'{{"text": "row {i}"}}\n' for i in range(2500)))
    main(["init", str(tmp_path / "project"), "--data", str(rows)])
    cfg = load_config(tmp_path / "project" / "hpo.yaml")
    assert cfg.model.method == "lora"  # 2,500 rows: medium
    assert cfg.search.budget.max_steps == 3 * 2500 // 16 + 1  # 3 epochs at an effective batch of 16
    assert "for medium data (2500 training rows)" in (tmp_path / "project" / "hpo.yaml").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main(["init", str(tmp_path / "other"), "--size", "small", "--data", str(rows)])
    assert exit_info.value.code == 2


def test_the_committed_init_examples_are_what_init_writes():
    for size in ("small", "large"):
        assert (ROOT / "examples" / "init" / f"{size}.yaml").read_text() == sized_config(size, None), size
