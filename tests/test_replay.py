"""Replay sources read like forgetting sets: each in its own format and columns, tokenized into the training stream
with its own loss mask, and errors that name the entry's own keys."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from hpo_action.cli import main
from hpo_action.config import parse_config
from hpo_action.data.loading import load_splits
from hpo_action.data.replay import REPLAY_COLUMN
from hpo_action.data.tokenize import tokenize_replay, tokenize_splits
from hpo_action.search.space import trial_defaults
from hpo_action.train.models import load_base_model
from hpo_action.train.trial import TrialRunner

from .helpers import QUICKSTART, error_line, small_config, write_config

SYSTEM = "You shift letters."


def _as_chats(source: Path, target: Path) -> None:
    """The quickstart's prompt/completion rows as chats (system, user, assistant), as a chat dataset holds them."""
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    chats = [
        {
            "id": row["id"],
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"]},
            ],
        }
        for row in rows
    ]
    target.write_text("".join(json.dumps(chat) + "\n" for chat in chats))


def _chat_config(tmp_path: Path, replay: dict[str, Any]) -> dict[str, Any]:
    """Chat training data, the copy skill replayed in its raw prompt/completion rows (renamed columns)."""
    raw = small_config(tmp_path)
    for split in ("train", "validation", "test"):
        _as_chats(QUICKSTART / f"{split}.jsonl", tmp_path / f"{split}.jsonl")
    rows = [json.loads(line) for line in (QUICKSTART / "replay_copy.jsonl").read_text().splitlines()]
    renamed = [{"key": r["id"], "question": r["prompt"], "answer": r["completion"]} for r in rows]
    (tmp_path / "replay_raw.jsonl").write_text("".join(json.dumps(r) + "\n" for r in renamed))
    raw["data"].update(format="messages", max_length=96, replay=[{"data": "replay_raw.jsonl", **replay}])
    raw["gate"]["forgetting"] = [
        {"name": "copy", "data": "forget_copy.jsonl", "format": "prompt_completion", "metric": "exact_match"}
    ]
    raw["train"].update(replay_ratio=0.5, kl_to_base=0.5)
    return raw


OWN = {"format": "prompt_completion", "columns": {"id": "key", "prompt": "question", "completion": "answer"}}


@pytest.mark.slow
def test_chat_training_replays_prompt_completion_rows_with_their_own_loss_masks(tmp_path: Path):
    cfg = parse_config(_chat_config(tmp_path, OWN), base_dir=tmp_path)
    splits = load_splits(cfg.data)
    (replay_set,) = splits.replay
    assert replay_set.format == "prompt_completion" and replay_set.rows[0]["id"] == "replay_copy-0000"
    base = load_base_model(cfg.model)
    tokenizer = base.tokenizer
    train, validation, _ = tokenize_splits(splits, tokenizer, cfg.data, tmp_path / "cache")
    replay, hit = tokenize_replay(splits.replay, tokenizer, cfg.data, tmp_path / "cache")
    assert not hit and tokenize_replay(splits.replay, tokenizer, cfg.data, tmp_path / "cache")[1]  # cached once

    runner = TrialRunner(cfg, base, train, validation, replay=replay)
    params = trial_defaults(cfg)
    model = base.attach(params)
    try:
        from transformers import TrainerCallback

        trainer = runner._trainer(model, params, str(tmp_path / "scratch"), [TrainerCallback()])
        batch = next(iter(trainer.get_train_dataloader()))  # what the model is trained on, collated
    finally:
        base.detach(model)
    prompts = {r["prompt"]: r["completion"] for r in replay_set.rows}
    chats = {r["messages"][1]["content"]: r["messages"][2]["content"] for r in splits.train}
    flags = batch[REPLAY_COLUMN].tolist()
    assert 0 < sum(flags) < len(flags)  # both kinds of row in one batch
    for ids, labels, flag in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), flags, strict=True):
        kept = [i for i, label in zip(ids, labels, strict=True) if label != -100]
        assert kept == [label for label in labels if label != -100]  # labels are the tokens they stand on
        text = tokenizer.decode([i for i in ids if i != tokenizer.pad_token_id])
        trained_on = tokenizer.decode(kept)
        if flag:  # raw replay row: no chat template, the loss on its completion only
            assert "<|" not in text and text.startswith("copy: ")
            prompt = text[: text.index(" = ") + 3]
            assert trained_on == prompts[prompt] + "</s>"
            assert text == f"{prompt}{prompts[prompt]}</s>"
        else:  # chat row: the template, the loss on the assistant turn only
            assert text.startswith(f"<|system|>{SYSTEM}<|end|>\n<|user|>shift: ")
            user = text[text.index("<|user|>") + len("<|user|>") : text.index("<|end|>\n<|assistant|>")]
            assert trained_on == f"{chats[user]}<|end|>\n</s>"

    result = runner.run({**params, "learning_rate": 1e-3})  # a real trial on the mixed stream
    assert math.isfinite(result.value) and result.steps == cfg.search.budget.max_steps


def test_replay_in_another_format_is_named_by_its_own_entry(tmp_path: Path, capsys):
    raw = _chat_config(tmp_path, {"columns": OWN["columns"]})  # the replay entry's format not given
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "-c", str(write_config(tmp_path, raw))])
    assert exit_info.value.code == 2
    line = error_line(capsys.readouterr().err)
    assert "data.replay.0:" in line and "replay_raw.jsonl line 1" in line and "format messages needs 'messages'" in line
    assert "set data.replay.0.format" in line and "data.replay.0.columns" in line
    assert "set data.format" not in line  # never a global change that would break the training data
    assert not (tmp_path / "out").exists()


def test_replay_entry_keys_are_checked_like_any_config_key(tmp_path: Path):
    raw = _chat_config(tmp_path, {"format": "chat"})
    with pytest.raises(Exception, match=r"data\.replay\.0\.format"):
        parse_config(raw, base_dir=tmp_path)
    cfg = parse_config(_chat_config(tmp_path, OWN), base_dir=tmp_path)
    (source,) = cfg.data.replay
    assert (source.format, source.columns.prompt, cfg.data.format) == ("prompt_completion", "question", "messages")
