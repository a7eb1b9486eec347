"""Forgetting remedies on the real tiny model: replay mixing, the KL-to-base term, and the replay/forgetting split."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hpo_action.cli import main
from hpo_action.config import parse_config
from hpo_action.data.loading import load_splits
from hpo_action.data.replay import REPLAY_COLUMN, mix, mixed_order
from hpo_action.data.tokenize import tokenize_replay, tokenize_splits
from hpo_action.search.space import trial_defaults
from hpo_action.train.models import load_base_model
from hpo_action.train.trial import TrialRunner

from .helpers import QUICKSTART, small_config, write_config

REPLAY = [{"data": "replay_copy.jsonl"}]


def _runner(tmp_path: Path, method: str = "lora") -> tuple[TrialRunner, dict]:
    raw = small_config(tmp_path, model={"method": method})
    raw["data"]["replay"] = REPLAY
    cfg = parse_config(raw, base_dir=tmp_path)
    base = load_base_model(cfg.model)
    splits = load_splits(cfg.data)
    train, validation, _ = tokenize_splits(splits, base.tokenizer, cfg.data, tmp_path / "cache")
    replay, _ = tokenize_replay(splits.replay, base.tokenizer, cfg.data, tmp_path / "cache")
    reference = base.frozen_copy()[0] if method == "full" else None
    return TrialRunner(cfg, base, train, validation, replay=replay, reference=reference), trial_defaults(cfg)


def _train_losses(runner: TrialRunner, params: dict, trainer_class: type, **extra) -> list[float]:
    """The logged training losses of one trial run with `trainer_class` on the runner's data and settings."""
    import tempfile

    from transformers import set_seed

    set_seed(runner.cfg.train.seed)
    model = runner.base.attach(params)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            trainer = trainer_class(
                model=model,
                args=runner._sft_config(params, scratch),
                train_dataset=runner.train_dataset,
                eval_dataset=runner.eval_dataset,
                processing_class=runner.base.tokenizer,
                **extra,
            )
            trainer.train()
            return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    finally:
        runner.base.detach(model)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _identical(before: dict[str, torch.Tensor], model: torch.nn.Module) -> bool:
    after = model.state_dict()
    return set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_replay_mixing_respects_the_ratio_within_sampling_error(ratio: float):
    rows, batch = 8000, 8
    order = mixed_order(640, [240, 60], [3.0, 1.0], ratio, rows, seed=42)
    replayed = [source > 0 for source, _ in order]
    sd = math.sqrt(ratio * (1 - ratio) / rows)
    assert abs(sum(replayed) / rows - ratio) < 4 * sd
    shares = [sum(replayed[i : i + batch]) / batch for i in range(0, rows, batch)]  # each batch's replay share
    assert abs(sum(shares) / len(shares) - ratio) < 4 * sd
    first = sum(1 for source, _ in order if source == 1)
    p = 0.75  # the weights 3:1 split the replay rows between the two sources
    assert abs(first / sum(replayed) - p) < 4 * math.sqrt(p * (1 - p) / sum(replayed))
    train_rows = [row for source, row in order if source == 0]
    assert sorted(train_rows[:640]) == list(range(640))  # train is walked in a shuffle: each row once per pass
    assert mixed_order(640, [240, 60], [3.0, 1.0], ratio, 100, seed=42) == order[:100]  # seeded


def test_mix_flags_replay_rows_and_keeps_their_tokens():
    import datasets

    train = datasets.Dataset.from_dict({"input_ids": [[1, 2]] * 10, "labels": [[-100, 2]] * 10})
    replay = datasets.Dataset.from_dict({"input_ids": [[7, 8, 9]] * 5, "labels": [[-100, 8, 9]] * 5})
    mixed = mix(train, [replay], [1.0], 0.5, 200, seed=0)
    assert len(mixed) == 200
    for row in mixed:
        assert row[REPLAY_COLUMN] == (row["input_ids"] == [7, 8, 9])
    assert 60 < sum(mixed[REPLAY_COLUMN]) < 140


@pytest.mark.slow
def test_kl_to_base_zero_reproduces_plain_sft_losses_exactly(tmp_path: Path):
    from trl import SFTTrainer

    from hpo_action.train.remedies import RemedyTrainer

    runner, params = _runner(tmp_path)
    params = {**params, "learning_rate": 1e-2}
    plain = _train_losses(runner, params, SFTTrainer)
    remedy = _train_losses(runner, params, RemedyTrainer, kl_to_base=0.0)
    distilled = _train_losses(runner, params, RemedyTrainer, kl_to_base=1.0)
    assert len(plain) == 2 and remedy == plain  # exactly, not approximately
    assert distilled != plain and all(math.isfinite(x) for x in distilled)


@pytest.mark.slow
def test_kl_to_base_with_replay_keeps_lora_base_weights_bit_identical(tmp_path: Path):
    runner, params = _runner(tmp_path)
    before = _state(runner.base.model)
    params = {**params, "learning_rate": 3e-2, "replay_ratio": 0.5}
    plain = runner.run(params)
    distilled = runner.run({**params, "kl_to_base": 2.0})
    assert plain.value != distilled.value  # the KL term changed the training
    assert _identical(before, runner.base.model)
    assert not any("lora" in name for name, _ in runner.base.model.named_modules())


@pytest.mark.slow
def test_full_fine_tuning_distills_to_a_frozen_reference_copy(tmp_path: Path):
    runner, params = _runner(tmp_path, method="full")
    before = _state(runner.base.model)
    reference = _state(runner.reference)
    result = runner.run({**params, "learning_rate": 1e-3, "replay_ratio": 0.5, "kl_to_base": 1.0})
    assert math.isfinite(result.value)
    assert _identical(before, runner.base.model)  # the trained weights were restored
    assert _identical(reference, runner.reference)  # the reference never trains
    assert not any(p.requires_grad for p in runner.reference.parameters())


@pytest.mark.parametrize("overlap", ["id", "text", "extra-field", "whitespace", "as-chat"])
def test_replay_rows_that_are_forgetting_rows_exit_2_naming_the_file(tmp_path: Path, capsys, overlap: str):
    raw = small_config(tmp_path)
    raw["gate"]["forgetting"] = [{"name": "copy", "data": "forget_copy.jsonl", "metric": "exact_match"}]
    forgotten = json.loads((QUICKSTART / "forget_copy.jsonl").read_text().splitlines()[5])
    if overlap != "id":
        forgotten["id"] = "my-own-id"
    if overlap == "extra-field":  # a field that never reaches the model does not make it another row
        forgotten["source"] = "scraped"
    if overlap == "whitespace":
        spaced = "  " + forgotten["prompt"].replace(" ", "  ")
        forgotten.update(prompt=spaced, completion=forgotten["completion"] + "\n")
    if overlap == "as-chat":  # the same prompt and completion, in a chat-format replay source
        turns = [{"role": "user", "content": forgotten.pop("prompt")}]
        forgotten["messages"] = [*turns, {"role": "assistant", "content": forgotten.pop("completion")}]
        rows = json.dumps(forgotten) + "\n"
        (tmp_path / "leaky.jsonl").write_text(rows)
        raw["data"]["replay"] = [{"data": "leaky.jsonl", "format": "messages"}]
    else:
        rows = (QUICKSTART / "replay_copy.jsonl").read_text() + json.dumps(forgotten) + "\n"
        (tmp_path / "leaky.jsonl").write_text(rows)
        raw["data"]["replay"] = ["leaky.jsonl"]
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "-c", str(write_config(tmp_path, raw))])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert "data.replay.0" in message and str(tmp_path / "leaky.jsonl") in message
    assert "gate.forgetting[copy]" in message and "forget_copy.jsonl" in message
    assert not (tmp_path / "out").exists()
