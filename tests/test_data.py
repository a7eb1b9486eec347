"""Data loading, checks, splits, tokenization and the tokenized cache, on real files and a character tokenizer."""

from __future__ import annotations

import csv
import json
import os
import string
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from hpo_action.config import Columns, DataConfig
from hpo_action.data import tokenize as data
from hpo_action.data.loading import Splits, load_rows, load_splits, rows_fingerprint
from hpo_action.data.tokenize import tokenize_rows, tokenize_splits, tokenizer_fingerprint
from hpo_action.errors import DataError

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
PAIRS = [{"prompt": f"q{i}? ", "completion": f"a{i}"} for i in range(10)]


def _char_tokenizer(add_bos: bool = True) -> Any:
    """One token per character, Llama-style bos from the post-processor; no network needed."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<pad>", "<s>", "</s>", "<unk>", *sorted(set(string.printable))])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return _char_tokenizer()


def cfg(**overrides: Any) -> DataConfig:
    return DataConfig(**{"train": "unused.jsonl", **overrides})


def write_jsonl(path: Path, rows: list[Any]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def error_of(source: str, config: DataConfig, role: str = "data.train") -> str:
    with pytest.raises(DataError) as info:
        load_rows(source, config, role)
    message = str(info.value)
    assert message.startswith(f"{role}: ") and "\n" not in message
    return message


def label_text(tokenizer: Any, labels: list[int]) -> str:
    return tokenizer.decode([t for t in labels if t != -100])


# Sources and formats


def test_jsonl_normalizes_rows_and_keeps_other_columns(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "p", "completion": "c", "answer": "B", "choices": [1]}])
    (row,) = load_rows(source, cfg(), "data.train")
    assert row == {"id": row["id"], "prompt": "p", "completion": "c", "answer": "B", "choices": [1]}
    assert len(row["id"]) == 16


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(json.dumps([{"text": "one"}, {"text": "two"}]), encoding="utf-8")
    assert [r["text"] for r in load_rows(str(path), cfg(format="text"), "data.train")] == ["one", "two"]


def test_csv_with_renamed_columns_and_given_ids(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["uid", "question", "answer"])
        writer.writerow([7, "what,\nnow?", "yes"])
        writer.writerow([8, "why?", "because"])
    config = cfg(columns=Columns(id="uid", prompt="question", completion="answer"))
    rows = load_rows(str(path), config, "data.train")
    assert rows == [
        {"id": "7", "prompt": "what,\nnow?", "completion": "yes"},
        {"id": "8", "prompt": "why?", "completion": "because"},
    ]


def test_parquet_messages(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    chats = [
        {"id": 1, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"id": 2, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
    ]
    pq.write_table(pa.Table.from_pylist(chats), tmp_path / "train.parquet")
    rows = load_rows(str(tmp_path / "train.parquet"), cfg(format="messages"), "data.train")
    assert rows == [{**chats[0], "id": "1"}, {**chats[1], "id": "2"}]


def test_parquet_written_by_pandas_text(tmp_path: Path) -> None:
    import pandas as pd

    pd.DataFrame({"text": ["alpha", "beta"], "source": ["x", "y"]}).to_parquet(tmp_path / "t.parquet")
    rows = load_rows(str(tmp_path / "t.parquet"), cfg(format="text"), "data.train")
    assert [(r["text"], r["source"]) for r in rows] == [("alpha", "x"), ("beta", "y")]


def test_csv_messages_cell_holds_json(tmp_path: Path) -> None:
    path = tmp_path / "chat.csv"
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["messages"], [json.dumps(chat)]])
    (row,) = load_rows(str(path), cfg(format="messages"), "data.train")
    assert row["messages"] == chat


def test_derived_ids_do_not_depend_on_file_order(tmp_path: Path) -> None:
    forward = load_rows(write_jsonl(tmp_path / "a.jsonl", PAIRS), cfg(), "data.train")
    backward = load_rows(write_jsonl(tmp_path / "b.jsonl", PAIRS[::-1]), cfg(), "data.train")
    assert [r["id"] for r in forward] == [r["id"] for r in backward][::-1]
    assert len({r["id"] for r in forward}) == len(PAIRS)


def test_hub_id_offline_is_a_data_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path)
    message = error_of("hpo-action-tests/no-such-dataset:dev", cfg(), "data.validation")
    assert "'hpo-action-tests/no-such-dataset'" in message and "split 'dev'" in message
    assert "HF_HUB_OFFLINE=0" in message
    assert "split 'test'" in error_of("hpo-action-tests/no-such-dataset", cfg(), "data.test")  # the role's split


# Splits


def test_seeded_validation_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "completion": "c"} for i in range(50)]
    config = cfg(train=write_jsonl(tmp_path / "a.jsonl", rows), validation_fraction=0.2, seed=3)
    first, second = load_splits(config), load_splits(config)
    assert first == second
    train_ids, val_ids = {r["id"] for r in first.train}, {r["id"] for r in first.validation}
    assert len(val_ids) == 10 and len(train_ids) == 40 and not train_ids & val_ids and first.test is None
    shuffled = load_splits(cfg(train=write_jsonl(tmp_path / "b.jsonl", rows[::-1]), validation_fraction=0.2, seed=3))
    assert {r["id"] for r in shuffled.validation} == val_ids
    other_seed = load_splits(cfg(train=config.train, validation_fraction=0.2, seed=4))
    assert {r["id"] for r in other_seed.validation} != val_ids


def test_tiny_train_keeps_one_row_each_side(tmp_path: Path) -> None:
    splits = load_splits(cfg(train=write_jsonl(tmp_path / "t.jsonl", PAIRS[:2]), validation_fraction=0.01))
    assert (len(splits.train), len(splits.validation)) == (1, 1)
    with pytest.raises(DataError, match=r"^data\.train: needs at least 2 rows"):
        load_splits(cfg(train=write_jsonl(tmp_path / "one.jsonl", PAIRS[:1])))


def test_given_validation_and_test(tmp_path: Path) -> None:
    config = cfg(
        train=write_jsonl(tmp_path / "train.jsonl", PAIRS[:6]),
        validation=write_jsonl(tmp_path / "val.jsonl", PAIRS[6:8]),
        test=write_jsonl(tmp_path / "test.jsonl", PAIRS[8:]),
    )
    splits = load_splits(config)
    assert [len(s) for s in (splits.train, splits.validation, splits.test or [])] == [6, 2, 2]


@pytest.mark.parametrize("other", ["train", "validation"])
def test_test_overlap_names_the_id(tmp_path: Path, other: str) -> None:
    config = cfg(
        train=write_jsonl(tmp_path / "train.jsonl", PAIRS[:6]),
        validation=write_jsonl(tmp_path / "val.jsonl", PAIRS[6:8]),
        test=write_jsonl(tmp_path / "test.jsonl", [PAIRS[9], PAIRS[5] if other == "train" else PAIRS[7]]),
    )
    leaked = load_rows(str(tmp_path / "test.jsonl"), config, "data.test")[1]["id"]
    with pytest.raises(DataError, match=rf"^data\.test: id '{leaked}' is also in data\.{other}; .*held out"):
        load_splits(config)


# Bad input: one error each, naming role, file and line


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(str(tmp_path / "nope.jsonl"), cfg()) == f"data.train: file not found: {tmp_path / 'nope.jsonl'}"


def test_unsupported_suffix(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("hello\n")
    assert "unsupported file type '.txt'" in error_of(str(tmp_path / "train.txt"), cfg())


def test_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_bytes(b'{"text": "caf\xe9"}\n')
    assert "not UTF-8 text (byte 13)" in error_of(str(tmp_path / "t.jsonl"), cfg(format="text"))


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert "no rows" in error_of(str(tmp_path / "empty.jsonl"), cfg(), "data.test")


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "c", \n')
    assert error_of(str(path), cfg()).startswith(f"data.train: {path} line 3: not valid JSON: ")


def test_row_that_is_not_an_object(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "t.jsonl", [PAIRS[0], ["p", "c"]])
    assert "line 2: expected an object" in error_of(source, cfg())


def test_missing_field_names_format_and_fix(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "t.jsonl", [PAIRS[0], PAIRS[1], {"prompt": "x"}])
    assert error_of(source, cfg()) == (
        f"data.train: {source} line 3: missing 'completion' "
        "(format prompt_completion needs 'prompt' and 'completion'; "
        "set data.format to the file's format, or map its fields with data.columns)"
    )


@pytest.mark.parametrize(
    ("fmt", "row", "expected"),
    [
        ("prompt_completion", {"prompt": "p", "completion": 5}, "'completion' must be a string, got int"),
        ("text", {"text": ["a"]}, "'text' must be a string, got list"),
        ("messages", {"messages": []}, "must be a non-empty list"),
        ("messages", {"messages": "hi"}, "not a JSON list"),
        ("messages", {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}, "messages[0].content"),
        ("messages", {"messages": [{"content": "x"}]}, "messages[0] must be an object with a string 'role'"),
        ("messages", {"messages": [{"role": "assistant", "content": "a"}]}, "at least one message before"),
    ],
)
def test_wrong_types(tmp_path: Path, fmt: str, row: dict[str, Any], expected: str) -> None:
    message = error_of(write_jsonl(tmp_path / "t.jsonl", [row]), cfg(format=fmt))
    assert "line 1: " in message and expected in message


def test_messages_must_end_with_assistant(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "?"}]
    message = error_of(write_jsonl(tmp_path / "t.jsonl", [{"messages": chat}]), cfg(format="messages"))
    assert "line 1: the last message must have role 'assistant' (got 'user')" in message


def test_duplicate_ids(tmp_path: Path) -> None:
    given = write_jsonl(tmp_path / "given.jsonl", [{"id": 1, **PAIRS[0]}, {"id": "1", **PAIRS[1]}])
    assert "line 2: duplicate id '1' (first at line 1)" in error_of(given, cfg())
    derived = write_jsonl(tmp_path / "derived.jsonl", [PAIRS[0], PAIRS[1], PAIRS[0]])
    assert "line 3: duplicate row (same content as line 1)" in error_of(derived, cfg())


def test_csv_row_with_extra_fields(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("prompt,completion\na,b\nc,d,e\n")
    assert "line 3: more fields than the header" in error_of(str(tmp_path / "t.csv"), cfg())


# Tokenization


def test_prompt_completion_labels_mask_the_prompt_exactly(tokenizer: Any) -> None:
    rows = [{"id": "a", "prompt": "Q: 2+2? ", "completion": "4"}, {"id": "b", "prompt": "hi ", "completion": "yo</s>"}]
    out = tokenize_rows(rows, tokenizer, cfg())
    assert list(out) == ["id", "input_ids", "labels"] and out["id"] == ["a", "b"]
    assert tokenizer.decode(out["input_ids"][0]) == "<s>Q: 2+2? 4</s>"
    assert label_text(tokenizer, out["labels"][0]) == "4</s>"
    assert out["labels"][0][: 1 + len("Q: 2+2? ")] == [-100] * 9
    assert tokenizer.decode(out["input_ids"][1]) == "<s>hi yo</s>"  # eos not doubled
    assert label_text(tokenizer, out["labels"][1]) == "yo</s>"


def test_no_bos_when_the_tokenizer_adds_none() -> None:
    tokenizer = _char_tokenizer(add_bos=False)
    out = tokenize_rows([{"id": "a", "prompt": "p", "completion": "c"}], tokenizer, cfg())
    assert tokenizer.decode(out["input_ids"][0]) == "pc</s>"


def test_truncation_and_dropped_rows(tokenizer: Any, caplog: pytest.LogCaptureFixture) -> None:
    rows = [
        {"id": "long", "prompt": "ab", "completion": "c" * 50},
        {"id": "no-room", "prompt": "p" * 20, "completion": "x"},
    ]
    out = tokenize_rows(rows, tokenizer, cfg(max_length=8))
    assert out["id"] == ["long"]
    assert len(out["input_ids"][0]) == len(out["labels"][0]) == 8
    assert tokenizer.decode(out["input_ids"][0]) == "<s>abccccc"
    assert "dropped 1 of 2 rows" in caplog.text and "'no-room'" in caplog.text


def test_text_format_labels_everything(tokenizer: Any) -> None:
    out = tokenize_rows([{"id": "t", "text": "hello"}], tokenizer, cfg(format="text"))
    assert tokenizer.decode(out["input_ids"][0]) == "<s>hello</s>"
    assert out["labels"][0] == [-100, *out["input_ids"][0][1:]]  # only bos, which no position predicts


def test_messages_loss_only_on_last_assistant_turn(tokenizer: Any) -> None:
    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "ciao"},
    ]
    out = tokenize_rows([{"id": "m", "messages": chat}], tokenizer, cfg(format="messages"))
    full = "<|user|>hi\n<|assistant|>hello\n<|user|>bye\n<|assistant|>ciao\n</s>"
    assert tokenizer.decode(out["input_ids"][0]) == full
    assert label_text(tokenizer, out["labels"][0]) == "ciao\n</s>"


def test_messages_need_a_prefix_stable_template() -> None:
    tokenizer = _char_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m.content }}|{% endfor %}{{ messages | length }}"
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(DataError, match=r"^data: row id 'm': the chat template is not prefix-stable"):
        tokenize_rows([{"id": "m", "messages": chat}], tokenizer, cfg(format="messages"))


def test_fingerprints_change_with_content(tokenizer: Any) -> None:
    assert rows_fingerprint(PAIRS) == rows_fingerprint([dict(r) for r in PAIRS])
    assert rows_fingerprint(PAIRS) != rows_fingerprint(PAIRS[::-1])
    other = _char_tokenizer()
    other(["abc"], truncation=True, max_length=2)  # leaves per-call state in the backend
    assert tokenizer_fingerprint(other) == tokenizer_fingerprint(tokenizer)
    other.chat_template = "{{ messages }}"
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)
    assert tokenizer_fingerprint(_char_tokenizer(add_bos=False)) != tokenizer_fingerprint(tokenizer)


# Cache


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = data.tokenize_rows

    def counting(*args: Any, **kwargs: Any) -> dict[str, list]:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(data, "tokenize_rows", counting)
    return calls


def splits_of(rows: list[dict[str, Any]]) -> Splits:
    return Splits(
        train=[{"id": str(i), **r} for i, r in enumerate(rows[:-2])],
        validation=[{"id": f"v{i}", **r} for i, r in enumerate(rows[-2:])],
        test=None,
    )


def test_cache_hit_skips_tokenization(tokenizer: Any, tmp_path: Path, counted: list[int]) -> None:
    splits = splits_of(PAIRS)
    train, validation, hit = tokenize_splits(splits, tokenizer, cfg(), tmp_path)
    assert (hit, len(counted)) == (False, 2)
    assert train.column_names == ["id", "input_ids", "labels"] and len(train) == 8 and len(validation) == 2
    again_train, again_validation, hit = tokenize_splits(splits, tokenizer, cfg(), tmp_path)
    assert (hit, len(counted)) == (True, 2)
    assert again_train.to_dict() == train.to_dict() and again_validation.to_dict() == validation.to_dict()
    assert [p.name for p in tmp_path.iterdir()] == [next(tmp_path.iterdir()).name]  # no temp folder left


def test_cache_misses_on_max_length_or_data_change(tokenizer: Any, tmp_path: Path, counted: list[int]) -> None:
    splits = splits_of(PAIRS)
    assert tokenize_splits(splits, tokenizer, cfg(), tmp_path)[2] is False
    assert tokenize_splits(splits, tokenizer, cfg(max_length=16), tmp_path)[2] is False
    changed = splits_of([*PAIRS[:-1], {"prompt": "new ", "completion": "row"}])
    assert tokenize_splits(changed, tokenizer, cfg(), tmp_path)[2] is False
    assert len(counted) == 6 and len(list(tmp_path.glob("tokenized-*"))) == 3


def test_unreadable_cache_is_rebuilt(tokenizer: Any, tmp_path: Path, counted: list[int]) -> None:
    splits = splits_of(PAIRS)
    tokenize_splits(splits, tokenizer, cfg(), tmp_path)
    for state in tmp_path.glob("tokenized-*/train/*.json"):
        state.unlink()
    train, _, hit = tokenize_splits(splits, tokenizer, cfg(), tmp_path)
    assert (hit, len(counted), len(train)) == (False, 4, 8)
    assert tokenize_splits(splits, tokenizer, cfg(), tmp_path)[2] is True


def test_losing_the_rename_race_uses_the_winner(
    tokenizer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    real_rename = os.rename

    def racing_rename(src: Any, dst: Any) -> None:
        shutil.copytree(src, dst)  # another writer finishes first
        real_rename(src, dst)

    monkeypatch.setattr(data, "os", SimpleNamespace(rename=racing_rename))
    train, _, hit = tokenize_splits(splits_of(PAIRS), tokenizer, cfg(), tmp_path)
    assert hit is False and len(train) == 8
    assert [p.name.startswith("tokenized-") for p in tmp_path.iterdir()] == [True]


def test_split_with_nothing_left_after_truncation(tokenizer: Any, tmp_path: Path) -> None:
    long = [{"prompt": "p" * 20, "completion": "c"}] * 4
    with pytest.raises(DataError, match=r"^data\.train: no row keeps a completion token within data\.max_length=8"):
        tokenize_splits(splits_of(long), tokenizer, cfg(max_length=8), tmp_path)
    assert list(tmp_path.iterdir()) == []
