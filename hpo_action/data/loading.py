"""Load, check, split and tokenize the data once, so every trial trains on the same cached token ids.

Every error is one line that names the config key, the file and the line or row, because a CI log is
often the only thing the user sees.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import DATA_SUFFIXES, DataConfig
from hpo_action.errors import DataError

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# Bump when tokenize_rows changes its output, so old caches are not reused.
_CACHE_VERSION = 1
_CANONICAL = {"prompt_completion": ("prompt", "completion"), "messages": ("messages",), "text": ("text",)}


@dataclass(frozen=True)
class Splits:
    """Normalized rows per split; test is kept apart because the study must never see it."""

    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]] | None


def load_rows(source: str, cfg: DataConfig, role: str) -> list[dict[str, Any]]:
    """Read a local file or Hub dataset and normalize each row to `id` + the format's canonical keys."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in DATA_SUFFIXES or path.exists() or source.startswith(("/", ".", "~")):
        path = path.resolve()
        if not path.is_file():
            raise DataError(f"{role}: file not found: {path}")
        if suffix not in DATA_SUFFIXES:
            raise DataError(
                f"{role}: {path}: unsupported file type {suffix or '(none)'!r}; use {', '.join(DATA_SUFFIXES)}"
            )
        origin = str(path)
        located = _read_file(path, role)
    else:
        origin = f"Hub dataset {source!r}"
        located = _read_hub(source, role)
    if not located:
        raise DataError(f"{role}: {origin}: no rows (the data is empty)")

    rows: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    for where, raw in located:
        prefix = f"{role}: {origin} {where}"
        row, given = _normalize(raw, cfg, prefix)
        if row["id"] in seen:
            if given:
                raise DataError(
                    f"{prefix}: duplicate id {row['id']!r} (first at {seen[row['id']]}); ids must be unique"
                )
            raise DataError(
                f"{prefix}: duplicate row (same content as {seen[row['id']]}); "
                f"remove it or give each row a unique {cfg.columns.id!r}"
            )
        seen[row["id"]] = where
        rows.append(row)
    return rows


def load_splits(cfg: DataConfig) -> Splits:
    """Load train, validation (given, or a seeded share of train) and test, and check that test is held out."""
    train = load_rows(cfg.train, cfg, "data.train")
    if cfg.validation:
        validation = load_rows(cfg.validation, cfg, "data.validation")
    else:
        train, validation = _split_off_validation(train, cfg)
    test = load_rows(cfg.test, cfg, "data.test") if cfg.test else None
    if test is not None:
        for other_role, other in (("data.train", train), ("data.validation", validation)):
            other_ids = {row["id"] for row in other}
            overlap = next((row["id"] for row in test if row["id"] in other_ids), None)
            if overlap is not None:
                raise DataError(
                    f"data.test: id {overlap!r} is also in {other_role}; the test split must be held out "
                    "(if the ids are per-file row numbers, make them unique across files or drop the id column)"
                )
    return Splits(train=train, validation=validation, test=test)


def rows_fingerprint(rows: list[dict[str, Any]]) -> str:
    """Hash of the rows in order: any edit to the data, or to their order, changes it."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(_canonical_json(row).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Hash of everything that changes token ids: vocab, rules, added/special tokens, chat template, bos/eos/pad."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = {
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "backend": _backend_rules(backend) if backend is not None else None,
        "added": sorted((i, t.content, t.special) for i, t in tokenizer.added_tokens_decoder.items()),
        "special": tokenizer.special_tokens_map,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "ids": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
        "bos_prefix": _bos_prefix(tokenizer),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def tokenize_rows(
    rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, *, role: str = "data"
) -> dict[str, list]:
    """Token ids and labels (-100 outside the completion), right-truncated to cfg.max_length.

    Rows with no label left after truncation are dropped and counted in a warning; `role` only names the
    split in messages.
    """
    if not rows:
        return {"id": [], "input_ids": [], "labels": []}
    if cfg.format == "messages":
        prompts, completions = _render_chats(rows, tokenizer, role)
        bos: list[int] = []  # the chat template writes its own bos
    elif cfg.format == "prompt_completion":
        prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
        bos = _bos_prefix(tokenizer)
    else:  # text: the whole text is the completion of an empty prompt
        prompts, completions = [""] * len(rows), [r["text"] for r in rows]
        bos = _bos_prefix(tokenizer)

    max_length = cfg.max_length
    prompt_ids = _encode(tokenizer, prompts)
    completion_ids = _encode(tokenizer, completions)
    eos_id, eos_token = tokenizer.eos_token_id, tokenizer.eos_token
    out: dict[str, list] = {"id": [], "input_ids": [], "labels": []}
    dropped: list[str] = []
    for row, prompt, completion, text in zip(rows, prompt_ids, completion_ids, completions, strict=True):
        if eos_id is not None and not text.rstrip().endswith(eos_token):
            completion = [*completion, eos_id]
        masked = len(bos) + len(prompt)
        if masked >= max_length or not completion:
            dropped.append(row["id"])
            continue
        out["id"].append(row["id"])
        out["input_ids"].append((bos + prompt + completion)[:max_length])
        out["labels"].append(([-100] * masked + completion)[:max_length])
    if dropped:
        counts = f"{len(dropped)} of {len(rows)} rows"
        logger.warning(
            f"{role}: dropped {counts}: no completion token within data.max_length={max_length} (first: {dropped[0]!r})"
        )
    return out


def tokenize_splits(
    splits: Splits, tokenizer: PreTrainedTokenizerBase, cfg: DataConfig, cache_dir: Path
) -> tuple[datasets.Dataset, datasets.Dataset, bool]:
    """Tokenized (train, validation, cache_hit); test is never tokenized here because the study never sees it.

    The cache folder is keyed by data, tokenizer, format and max_length, and appears atomically (written to a
    temp folder, then renamed), so a crash never leaves half a cache and concurrent writers agree.
    """
    import datasets

    fingerprints = [
        rows_fingerprint(splits.train),
        rows_fingerprint(splits.validation),
        tokenizer_fingerprint(tokenizer),
    ]
    key = hashlib.sha256(json.dumps([_CACHE_VERSION, *fingerprints, cfg.format, cfg.max_length]).encode()).hexdigest()
    cache_dir = Path(cache_dir)
    target = cache_dir / f"tokenized-{key[:16]}"
    if target.is_dir():
        try:
            return datasets.load_from_disk(target / "train"), datasets.load_from_disk(target / "validation"), True
        except (OSError, ValueError) as err:  # damaged by hand: rebuild rather than fail every run
            logger.warning("tokenized cache %s is unreadable (%s); rebuilding it", target, err)
            shutil.rmtree(target, ignore_errors=True)

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        for name, rows, role in (
            ("train", splits.train, "data.train"),
            ("validation", splits.validation, "data.validation"),
        ):
            columns = tokenize_rows(rows, tokenizer, cfg, role=role)
            if not columns["id"]:
                raise DataError(
                    f"{role}: no row keeps a completion token within data.max_length={cfg.max_length}; "
                    "raise data.max_length or shorten the prompts"
                )
            datasets.Dataset.from_dict(columns).save_to_disk(str(tmp / name))
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            # Another process finished the same cache first; its copy is identical.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(target / "train"), datasets.load_from_disk(target / "validation"), False


def _read_file(path: Path, role: str) -> list[tuple[str, Any]]:
    """Raw rows with their location ('line 7' or 'row 7'), chosen by suffix."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except Exception as err:  # pyarrow raises several unrelated types for a bad file
                raise DataError(f"{role}: {path}: not a readable parquet file: {_first_line(err)}") from None
            return [(f"row {i}", row) for i, row in enumerate(table.to_pylist(), start=1)]
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{role}: {path}: not UTF-8 text (byte {err.start})") from None
    if suffix == ".csv":
        return _parse_csv(text, path, role)
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{role}: {path} line {err.lineno}: not valid JSON: {err.msg}") from None
        return [(f"item {i}", item) for i, item in enumerate(items, start=1)]
    located = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                located.append((f"line {number}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{role}: {path} line {number}: not valid JSON: {err.msg} (column {err.colno})"
                ) from None
    return located


def _parse_csv(text: str, path: Path, role: str) -> list[tuple[str, Any]]:
    csv.field_size_limit(2**31 - 1)  # long completions exceed the 128 KiB default
    reader = csv.DictReader(text.splitlines(keepends=True))
    located = []
    try:
        for row in reader:
            if None in row:
                raise DataError(f"{role}: {path} line {reader.line_num}: more fields than the header has")
            located.append((f"line {reader.line_num}", row))
    except csv.Error as err:
        raise DataError(f"{role}: {path} line {reader.line_num}: not valid CSV: {err}") from None
    return located


def _read_hub(source: str, role: str) -> list[tuple[str, Any]]:
    """Load 'org/name[:split]'; the split defaults to the role's own ('data.validation' → 'validation')."""
    import datasets

    name, _, split = source.partition(":")
    split = split or role.rsplit(".", 1)[-1]
    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as err:  # offline, unknown repo or split, gated, bad files: one message for all
        raise DataError(
            f"{role}: cannot load Hub dataset {name!r} split {split!r}: {_first_line(err)} "
            f"(offline? set HF_HUB_OFFLINE=0 or point {role} at a local .jsonl file)"
        ) from None
    return [(f"row {i}", row) for i, row in enumerate(dataset.to_list(), start=1)]


def _normalize(raw: Any, cfg: DataConfig, prefix: str) -> tuple[dict[str, Any], bool]:
    """The row with canonical keys and its id; True when the id came from the data rather than a content hash."""
    if not isinstance(raw, dict):
        raise DataError(f"{prefix}: expected an object with named fields, got {_type_name(raw)}")
    columns = cfg.columns
    canonical_names = _CANONICAL[cfg.format]
    sources = [getattr(columns, name) for name in canonical_names]
    content: dict[str, Any] = {}
    for name, source in zip(canonical_names, sources, strict=True):
        value = raw.get(source)
        if value is None:
            needs = " and ".join(repr(s) for s in sources)
            raise DataError(
                f"{prefix}: missing {source!r} (format {cfg.format} needs {needs}; rename with data.columns)"
            )
        if name == "messages":
            value = _check_messages(value, source, prefix)
        elif not isinstance(value, str):
            raise DataError(f"{prefix}: {source!r} must be a string, got {_type_name(value)}")
        content[name] = value
    consumed = {columns.id, *sources, "id", *canonical_names}
    extra = {key: value for key, value in raw.items() if key not in consumed}
    given = raw.get(columns.id)
    if given is not None and given != "":
        return {"id": str(given), **content, **extra}, True
    return {"id": _content_id({**content, **extra}), **content, **extra}, False


def _check_messages(value: Any, source: str, prefix: str) -> list[dict[str, Any]]:
    """A non-empty list of {role, content} dicts ending with the assistant turn the loss is on."""
    if isinstance(value, str):  # CSV cells hold the list as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise DataError(f"{prefix}: {source!r} is text that is not a JSON list of messages") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"{prefix}: {source!r} must be a non-empty list of {{role, content}} objects")
    for i, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)):
            raise DataError(f"{prefix}: {source}[{i}] must be an object with a string 'role'")
        if not isinstance(message.get("content"), str):
            raise DataError(
                f"{prefix}: {source}[{i}].content must be a string, got {_type_name(message.get('content'))}"
            )
    last_role = value[-1]["role"]
    if last_role != "assistant":
        raise DataError(f"{prefix}: the last message must have role 'assistant' (got {last_role!r}); the loss is on it")
    if len(value) < 2:
        raise DataError(f"{prefix}: {source!r} needs at least one message before the final assistant turn")
    return list(value)


def _split_off_validation(
    rows: list[dict[str, Any]], cfg: DataConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Hold out a seeded share of train, chosen by hashing (seed, id): the same rows whatever the file order."""
    if len(rows) < 2:
        raise DataError(
            f"data.train: needs at least 2 rows to hold out a validation split (got {len(rows)}); "
            "add rows or set data.validation"
        )
    n_validation = min(max(1, round(len(rows) * cfg.validation_fraction)), len(rows) - 1)
    ranked = sorted(rows, key=lambda row: hashlib.sha256(f"{cfg.seed}:{row['id']}".encode()).digest())
    held_out = {row["id"] for row in ranked[:n_validation]}
    return [r for r in rows if r["id"] not in held_out], [r for r in rows if r["id"] in held_out]


def _render_chats(
    rows: list[dict[str, Any]], tokenizer: PreTrainedTokenizerBase, role: str
) -> tuple[list[str], list[str]]:
    """Split each rendered chat into the prompt (earlier turns + generation prompt) and the last turn."""
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            f"{role}: format messages needs a tokenizer with a chat_template; use a chat model or text format"
        )
    prompts, completions = [], []
    for row in rows:
        messages = row["messages"]
        try:
            prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(messages, tokenize=False)
        except Exception as err:  # jinja raises its own errors, e.g. for roles the template rejects
            raise DataError(f"{role}: row id {row['id']!r}: the chat template failed: {_first_line(err)}") from None
        if not full.startswith(prompt):
            raise DataError(
                f"{role}: row id {row['id']!r}: the chat template is not prefix-stable (the chat without its last "
                "turn, plus the generation prompt, does not start the full chat), so the loss cannot be put on the "
                "last assistant turn alone"
            )
        prompts.append(prompt)
        completions.append(full[len(prompt) :])
    return prompts, completions


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """One batched call, which the fast tokenizer runs in parallel; truncation happens after joining the parts."""
    return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]


def _backend_rules(backend: Any) -> dict[str, Any]:
    """The fast backend's JSON: merges, normalizer and post-processor, which the vocab misses.

    Truncation and padding are left out: they are per-call state that the last call left behind.
    """
    rules = json.loads(backend.to_str())
    rules.pop("truncation", None)
    rules.pop("padding", None)
    return rules


def _bos_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """[bos] when the tokenizer adds one by itself (Llama-style), else []: the model was trained that way."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("x")["input_ids"]
    return [bos] if ids and ids[0] == bos else []


def _content_id(content: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical_json(content).encode()).hexdigest()[:16]


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
