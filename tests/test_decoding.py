"""Decoding search: generation settings tuned on the validation split (greedy first, kept unless beaten), saved as
generation_config.json beside the adapter, used by the test evaluation, recorded in gate.json, shown in the card
and published; sampled decoding is seeded, so a decoding trial is reproducible."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from hpo_action.cli import main
from hpo_action.config import apply_overrides, parse_config
from hpo_action.errors import ConfigError, GateError
from hpo_action.judge.generation import GENERATION_CONFIG, Decoding, read_decoding, write_generation_config

from .helpers import small_config

SAMPLED = Decoding(do_sample=True, temperature=1.3, top_p=0.95, top_k=20, repetition_penalty=1.1, max_new_tokens=9)


def test_greedy_passes_no_sampling_settings_and_sampling_passes_them_all():
    assert Decoding(max_new_tokens=7).generate_kwargs() == {
        "do_sample": False,
        "num_beams": 1,
        "max_new_tokens": 7,
        "repetition_penalty": 1.0,
    }
    assert {"temperature": 1.3, "top_p": 0.95, "top_k": 20}.items() <= SAMPLED.generate_kwargs().items()


def test_ties_keep_the_deterministic_then_the_simplest_setting():
    from hpo_action.judge.decoding import DecodingTrial, choose

    greedy = Decoding(max_new_tokens=12)
    longer = Decoding(max_new_tokens=16)
    penalised = Decoding(max_new_tokens=16, repetition_penalty=1.2)
    scored = (
        DecodingTrial(0, greedy, 0.80),
        DecodingTrial(1, SAMPLED, 0.90),  # the first to reach 0.90 samples ...
        DecodingTrial(2, penalised, 0.90),
        DecodingTrial(3, longer, 0.90),  # ... a later greedy setting ties it with one change from greedy
    )
    assert choose(scored, greedy, "maximize").number == 3
    assert choose(scored[:3], greedy, "maximize").number == 2  # deterministic beats sampled, however simple
    assert choose((DecodingTrial(0, greedy, 0.9), *scored[1:]), greedy, "maximize").number == 0  # greedy wins ties
    losses = (DecodingTrial(0, greedy, 2.0), DecodingTrial(1, SAMPLED, 1.5), DecodingTrial(2, longer, 1.5))
    assert choose(losses, greedy, "minimize").number == 2
    assert choose(losses[:2], greedy, "minimize").number == 1  # strictly better: sampling is kept


def test_a_decoding_search_without_a_metric_on_generated_text_exits_2():
    from hpo_action.judge.decoding import generation_metric

    raw = {"model": {"name": "m"}, "data": {"train": "t.jsonl"}, "evaluate": {"metrics": ["loss", "perplexity"]}}
    with pytest.raises(ConfigError, match="needs a metric scored on generated text") as info:
        generation_metric(parse_config(raw), lambda names: True)
    assert info.value.exit_code == 2


def test_generation_config_round_trips_and_is_a_transformers_generation_config(tmp_path: Path):
    from transformers import GenerationConfig

    decoding = replace(SAMPLED, seed=7)
    write_generation_config(tmp_path, decoding, {"eos_token_id": 2, "pad_token_id": 0, "temperature": 0.3})
    assert read_decoding(tmp_path) == decoding
    loaded = GenerationConfig.from_pretrained(tmp_path)
    assert (loaded.do_sample, loaded.temperature, loaded.top_k, loaded.max_new_tokens) == (True, 1.3, 20, 9)
    assert (loaded.eos_token_id, loaded.pad_token_id) == (2, 0)
    (tmp_path / GENERATION_CONFIG).write_text(json.dumps({"eos_token_id": 2, "do_sample": True}))
    assert read_decoding(tmp_path) is None  # a full model's own generation config is not a tuned decoding


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """An adapter (one training step: the search tunes generation, not weights) and a validation split labelled
    with the adapter's own 2-token greedy continuations, so that the configured 4 tokens run past most answers
    and the shorter setting is measurably right: a task whose best decoding is known without minutes of training."""
    from hpo_action.data.loading import load_splits
    from hpo_action.data.tokenize import tokenize_splits
    from hpo_action.judge.evaluate import EvalSettings, attach_trained, score_rows
    from hpo_action.search.space import trial_defaults
    from hpo_action.train.models import load_base_model
    from hpo_action.train.trial import TrialRunner

    tmp = tmp_path_factory.mktemp("decoding")
    raw = small_config(tmp, search={"budget": {"max_steps": 1, "eval_every": 1}}, gate={"forgetting": []})
    raw["evaluate"].update(max_new_tokens=4, decoding_trials=6, batch_size=40)
    cfg = parse_config(raw, base_dir=tmp)
    base = load_base_model(cfg.model)
    splits = load_splits(cfg.data)
    train, validation, _ = tokenize_splits(splits, base.tokenizer, cfg.data, tmp / "cache")
    TrialRunner(cfg, base, train, validation).run(trial_defaults(cfg), save_to=lambda _: tmp / "adapter")
    model, _ = attach_trained(base, tmp / "adapter")
    try:
        settings = EvalSettings(("exact_match",), max_new_tokens=2, batch_size=40)
        records = score_rows(model, base.tokenizer, splits.validation, cfg.data, settings)
        outputs = [record["output"].strip() for record in records]
    finally:
        base.model = model.unload()
    labelled = [{**row, "completion": out} for row, out in zip(splits.validation, outputs, strict=True) if out]
    assert len(labelled) >= 40
    (tmp / "validation.jsonl").write_text("".join(json.dumps(row) + "\n" for row in labelled))
    cfg = parse_config(raw, base_dir=tmp)
    return cfg, base, load_splits(cfg.data), tmp


@pytest.mark.slow
def test_sampled_decoding_is_reproducible_from_its_seed(trained):
    import torch

    from hpo_action.judge.evaluate import EvalSettings, attach_trained, score_rows

    cfg, base, splits, tmp = trained
    model, _ = attach_trained(base, tmp / "adapter")
    try:
        settings = EvalSettings.from_config(cfg.evaluate, SAMPLED)
        rows = splits.validation[:40]
        state = torch.get_rng_state()
        first, again = (score_rows(model, base.tokenizer, rows, cfg.data, settings) for _ in range(2))
        assert torch.equal(state, torch.get_rng_state())  # sampled inside a forked RNG: nothing else's moved
        other = score_rows(model, base.tokenizer, rows, cfg.data, replace(settings, decoding=replace(SAMPLED, seed=1)))
    finally:
        base.model = model.unload()
    assert [r["output"] for r in first] == [r["output"] for r in again]
    assert [r["output"] for r in first] != [r["output"] for r in other]


@pytest.mark.slow
def test_search_beats_greedy_when_its_length_is_wrong_and_says_so_otherwise(trained):
    from hpo_action.judge.decoding import search_decoding
    from hpo_action.judge.evaluate import attach_trained

    cfg, base, splits, tmp = trained
    length_only = {
        "do_sample": {"value": False},
        "repetition_penalty": {"value": 1.0},
        "max_new_tokens": {"low": 2, "high": 4, "step": 2},
    }
    short_cfg = apply_overrides(cfg, {"evaluate.decoding_space": length_only})
    roomy_cfg = apply_overrides(cfg, {"evaluate.max_new_tokens": 2, "evaluate.decoding_trials": 4})
    model, _ = attach_trained(base, tmp / "adapter")
    try:
        short = search_decoding(model, base.tokenizer, splits.validation, short_cfg)
        roomy = search_decoding(model, base.tokenizer, splits.validation, roomy_cfg)  # sampling searched too
    finally:
        base.model = model.unload()
    assert short.trials[0].decoding == Decoding(max_new_tokens=4) and short.metric == "exact_match"
    assert short.improved and short.best.value == 1.0 > short.greedy.value  # 4 tokens run past 2-token answers
    assert short.best.decoding == Decoding(max_new_tokens=2)
    assert f"{short.greedy.value:.4g} greedy -> {short.best.value:.4g}" in short.verdict()
    assert roomy.greedy.value == 1.0 and len(roomy.trials) == 4  # nothing can beat greedy here
    assert not roomy.improved and roomy.best.number == 0 and "greedy is best" in roomy.verdict()
    print(short.verdict(), roomy.verdict(), sep="\n")


@pytest.mark.slow
def test_tune_decoding_writes_the_settings_that_evaluate_then_uses(trained, capsys):
    from hpo_action.data.loading import load_splits

    cfg, _, _, tmp = trained
    config = tmp / "hpo.yaml"
    config.write_text(json.dumps(cfg.model_dump(mode="json")))
    adapter = tmp / "adapter"
    main(["tune-decoding", "-c", str(config), "--adapter", str(adapter), "--n-trials", "3"])
    chosen = read_decoding(adapter)
    n = len(load_splits(cfg.data).validation)
    assert chosen is not None and f"decoding search on {n} validation examples, 3 trials" in capsys.readouterr().err
    out = tmp / "validation.jsonl"
    main(["evaluate", "-c", str(config), "--adapter", str(adapter), "--split", "validation", "--out", str(out)])
    meta = json.loads(out.with_suffix(".meta.json").read_text())
    assert meta["settings"]["decoding"] == chosen.to_json()


@pytest.mark.slow
def test_run_with_decoding_search_gates_publishes_and_shows_the_chosen_settings(tmp_path: Path, capsys):
    from hpo_action.pipeline import run
    from hpo_action.ship.publish import publish_run

    raw = small_config(
        tmp_path,
        search={"n_trials": 1, "pruner": "none", "budget": {"max_steps": 6, "eval_every": 3}},
        train={"learning_rate": 1.5e-2},
        registry={"uri": str(tmp_path / "registry")},
    )
    lines = (tmp_path / "forget_copy.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "copy40.jsonl").write_text("".join(lines[:40]))  # a small set with a wide margin: it passes
    raw["gate"]["forgetting"] = [{"name": "copy", "data": "copy40.jsonl", "metric": "exact_match", "margin": 0.9}]
    raw["search"]["space"] = {"lora_r": {"choices": [16]}}  # one searched parameter, one trial: too few
    raw["evaluate"].update(max_new_tokens=4, decoding_search=True, decoding_trials=5, metrics=["loss", "exact_match"])
    decision = run(parse_config(raw, base_dir=tmp_path))
    chosen = read_decoding(tmp_path / "out" / "best")
    assert chosen is not None
    assert decision.config.decoding == chosen.to_json()
    assert json.loads((tmp_path / "out" / "gate.json").read_text())["config"]["decoding"] == chosen.to_json()
    record = json.loads((tmp_path / "out" / "decoding.json").read_text())
    assert record["best"]["decoding"] == chosen.to_json() and record["trials"][0]["decoding"]["do_sample"] is False
    meta = json.loads((tmp_path / "out" / "predictions" / "test.candidate.meta.json").read_text())
    assert meta["settings"]["decoding"] == chosen.to_json()
    base_meta = json.loads((tmp_path / "out" / "predictions" / "test.base.meta.json").read_text())
    assert base_meta["settings"]["decoding"] == chosen.to_json()  # both sides generate with the same settings
    for role in ("base", "candidate"):
        meta = json.loads((tmp_path / "out" / "predictions" / f"copy.{role}.meta.json").read_text())
        assert meta["settings"]["decoding"] == chosen.to_json(), role
    assert decision.config.reference_decoding == chosen.to_json()
    assert "decoding search on 80 validation examples" in capsys.readouterr().err
    assert decision.promote  # the test loss falls clearly in 6 steps at this rate
    version = tmp_path / "registry" / "versions" / "1"
    assert read_decoding(version) == chosen
    assert "## Generation settings" in (version / "README.md").read_text()
    assert "The reference (the base model) was scored with the same settings." in (version / "README.md").read_text()
    changed = replace(chosen, max_new_tokens=chosen.max_new_tokens + 1)
    write_generation_config(tmp_path / "out" / "best", changed, {})  # settings the gate never evaluated
    with pytest.raises(GateError, match="generation settings"):
        publish_run(tmp_path / "out", str(tmp_path / "other-registry"))
    assert "**Doctor**" in (tmp_path / "out" / "report.md").read_text()  # 1 trial: too few for the search
