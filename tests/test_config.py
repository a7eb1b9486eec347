from __future__ import annotations

from pathlib import Path

import pytest

from hpo_action.config import DEFAULT_LEARNING_RATE, apply_overrides, load_config, parse_config, parse_set_option
from hpo_action.errors import ConfigError

BASE = {"model": {"name": "hpo-action/tiny-demo"}, "data": {"train": "train.jsonl"}}


def _with(**sections):
    raw = {k: dict(v) for k, v in BASE.items()}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_with(search={"samplr": "tpe"}), "search.samplr: unknown key; did you mean 'sampler'?"),
        (_with(model={"methd": "lora"}), "model.methd: unknown key; did you mean 'method'?"),
        (_with(serch={}), "serch: unknown key; did you mean 'search'?"),
        (_with(search={"n_trials": -3}), "search.n_trials: Input should be greater than or equal to 1 (got -3)"),
        (_with(search={"sampler": "annealing"}), "search.sampler: Input should be 'tpe'"),
        (_with(train={"lora_r": "big"}), "train.lora_r: Input should be a valid integer"),
        (_with(search={"space": {"learnin_rate": {"low": 1, "high": 2}}}), "did you mean 'learning_rate'?"),
        (
            _with(gate={"forgetting": [{"name": "copy", "data": "f.jsonl", "margn": 0.1}]}),
            "gate.forgetting.0.margn: unknown key; did you mean 'margin'?",  # a typo inside a list item
        ),
        (
            _with(
                gate={
                    "forgetting": [
                        {"name": "a", "data": "f.jsonl", "metric": "exact_match"},
                        {"name": "b", "data": "f.jsonl"},
                    ]
                }
            ),
            "gate.forgetting.1.margin: loss is a score, so there is no default margin",  # issue 21 item 6
        ),
        (
            _with(evaluate={"metrics": ["tests.user_metrics:OutputLength"]}),
            "hpo.yaml: gate.score_range: 'output_length' is a score of unknown range",  # before the search, not after
        ),
        (
            _with(gate={"forgetting": [{"name": "q", "kind": "lm_eval", "tasks": ["t"], "metric": "f1", "margin": 1}]}),
            "gate.score_range: 'f1' is a score of unknown range",
        ),
        (
            _with(gate={"forgetting": [{"name": "q", "kind": "lm_eval", "tasks": ["t"], "metric": "f1"}]}),
            "gate.forgetting.0.margin: f1 is a score, so there is no default margin",
        ),
        (_with(gate={"confidence": 0.9}), "gate.confidence: removed: the gate shows only the bounds of its own test"),
        (_with(search={"space": {"lora_r": {"low": 2, "hihg": 8}}}), "search.space.lora_r.hihg: unknown key; did you"),
        (_with(data={"replay": [{"data": "r.jsonl", "wieght": 2}]}), "data.replay.0.wieght: unknown key; did you mean"),
        (_with(search={"space": {"lora_r": {"low": 8, "high": 2}}}), "low (8.0) must not exceed high (2.0)"),
        (_with(search={"space": {"learning_rate": {"low": 0, "high": 1, "log": True}}}), "log: true needs low > 0"),
        (_with(search={"budget": {"max_steps": 5, "eval_every": 10}}), "eval_every (10) must not exceed max_steps"),
        ({"model": {"name": "x"}}, "data: Field required"),
    ],
)
def test_bad_config_names_the_key(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(raw, source="hpo.yaml")
    assert expected in str(err.value)
    assert str(err.value).startswith("hpo.yaml: ")
    assert "\n" not in str(err.value)


def test_space_types_are_inferred_and_yaml_exponents_parse(tmp_path: Path):
    path = tmp_path / "hpo.yaml"
    path.write_text(
        "model: {name: hpo-action/tiny-demo}\n"
        "data: {train: d/train.jsonl}\n"
        "search:\n  space:\n"
        "    learning_rate: {low: 1e-5, high: 1e-2, log: true}\n"  # YAML 1.1 reads 1e-5 as a string
        "    lora_r: {low: 2, high: 16, step: 2}\n"
        "    lora_alpha: {choices: [8, 16]}\n"
        "    lora_dropout: 0.0\n"
    )
    space = load_config(path).search.space
    assert (space["learning_rate"].type, space["learning_rate"].low) == ("float", 1e-5)
    assert space["lora_r"].type == "int"
    assert space["lora_alpha"].type == "categorical"
    assert (space["lora_dropout"].type, space["lora_dropout"].value) == ("fixed", 0.0)


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path):
    folder = tmp_path / "project"
    folder.mkdir()
    path = folder / "hpo.yaml"
    path.write_text(
        "model: {name: org/hub-model}\n"
        "data: {train: data/train.jsonl, test: ../test.csv, validation: org/dataset}\n"
        "search: {storage: sqlite:///db/study.db}\n"
        "output: {dir: out}\n"
    )
    cfg = load_config(path)
    assert cfg.data.train == str(folder / "data" / "train.jsonl")
    assert cfg.data.test == str(tmp_path / "test.csv")
    assert cfg.data.validation == "org/dataset"  # a Hub id stays a Hub id
    assert cfg.model.name == "org/hub-model"
    assert cfg.output.dir == str(folder / "out")
    assert cfg.search.storage == f"sqlite:///{folder / 'db' / 'study.db'}"


def test_method_conditional_parameters_and_learning_rate_defaults():
    space = {"lora_r": {"low": 2, "high": 8}, "weight_decay": {"low": 0.0, "high": 0.1, "methods": ["full"]}}
    lora = parse_config(_with(search={"space": space}))
    full = parse_config(_with(search={"space": space}, model={"method": "full"}))
    assert set(lora.active_space()) == {"lora_r"}
    assert set(full.active_space()) == {"weight_decay"}
    assert lora.learning_rate == DEFAULT_LEARNING_RATE["lora"]
    assert full.learning_rate == DEFAULT_LEARNING_RATE["full"]
    # The method's default is resolved after every override: --method full trains at the full rate.
    assert apply_overrides(lora, {"model.method": "full"}).learning_rate == DEFAULT_LEARNING_RATE["full"]
    explicit = apply_overrides(lora, {"train.learning_rate": 1e-3})
    assert apply_overrides(explicit, {"model.method": "full"}).learning_rate == 1e-3
    assert apply_overrides(explicit, {"train.learning_rate": None}).learning_rate == DEFAULT_LEARNING_RATE["lora"]


def test_overrides_revalidate_and_keep_the_study_name_stable():
    cfg = parse_config(_with(search={"n_trials": 5}))
    changed = apply_overrides(cfg, {"search.n_trials": 50, "search.sampler": "random", "search.timeout": None})
    assert (changed.search.n_trials, changed.search.sampler) == (50, "random")
    assert changed.fingerprint() == cfg.fingerprint()
    assert apply_overrides(cfg, {"train.lora_r": 4}).fingerprint() != cfg.fingerprint()
    with pytest.raises(ConfigError, match=r"search\.sampler"):
        apply_overrides(cfg, {"search.sampler": "bogus"})
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        apply_overrides(cfg, {"train.learnig_rate": 1e-3})


def test_set_option_parses_yaml_values():
    assert parse_set_option("train.learning_rate=1.0e-3") == ("train.learning_rate", 1e-3)
    assert parse_set_option("search.space.lora_r.choices=[4, 8]") == ("search.space.lora_r.choices", [4, 8])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_option("novalue")


def test_missing_and_malformed_config_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)
