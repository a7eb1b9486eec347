"""Load, check and split the rows: every source normalized to `id` plus the format's canonical keys.

Every error is one line that names the config key, the file and the line or row, because a CI log is
often the only thing the user sees.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpo_action.config import DataConfig
from hpo_action.data.rows import Rows
from hpo_action.data.splits import Folds, holdout_share, make_folds, time_splits
from hpo_action.errors import DataError
from hpo_action.sources import DATA_SUFFIXES

logger = logging.getLogger(__name__)

_CANONICAL = {"prompt_completion": ("prompt", "completion"), "messages": ("messages",), "text": ("text",)}


@dataclass(frozen=True)
class ReplaySet:
    """One data.replay source's rows, with its weight among the replay sources and the data settings it is read
    and tokenized with (its own format and columns, else data's)."""

    source: str
    weight: float
    rows: Rows
    data_cfg: DataConfig
    key: str  # the config entry, e.g. data.replay.0: errors name it and its own keys

    @property
    def format(self) -> str:
        return self.data_cfg.format


@dataclass(frozen=True)
class Splits:
    """Normalized rows per split; test is kept apart because the study must never see it. Under kfold, `folds`
    holds the k folds and train/validation are the last fold's (the one whose model is kept)."""

    train: Rows
    validation: Rows
    test: Rows | None
    warnings: tuple[str, ...] = ()  # e.g. test rows whose text also appears in train (under other ids)
    folds: Folds | None = None
    replay: tuple[ReplaySet, ...] = ()


def load_rows(source: str, cfg: DataConfig, role: str, settings_key: str = "data") -> Rows:
    """Read a local file or Hub dataset and normalize each row to `id` + the format's canonical keys.
    `settings_key` is the config entry whose `format` and `columns` describe the rows (a shape error names it)."""
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

    rows: Rows = []
    seen: dict[str, str] = {}
    for where, raw in located:
        prefix = f"{role}: {origin} {where}"
        row, given = _normalize(raw, cfg, prefix, settings_key)
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


def count_rows(path: Path) -> int:
    """The rows of a local data file, whatever their columns (init infers the dataset size from it)."""
    path = Path(path).expanduser().resolve()
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; use {', '.join(DATA_SUFFIXES)}")
    return len(_read_file(path, str(path)))


def load_splits(cfg: DataConfig) -> Splits:
    """Load train, validation and test by data.validation_strategy (see data/splits.py), and check that test is
    held out."""
    train = load_rows(cfg.train, cfg, "data.train")
    test = load_rows(cfg.test, cfg, "data.test") if cfg.test else None
    folds = None
    if cfg.validation_strategy == "time":
        train, validation, test = time_splits(train, test, cfg)
    elif cfg.validation:
        validation = load_rows(cfg.validation, cfg, "data.validation")
    else:
        train, validation = holdout_share(train, cfg.validation_fraction, cfg.seed)
    if cfg.validation_strategy == "kfold":
        folds = make_folds(train + validation, cfg.k, cfg.seed)
        train, validation = folds.split(cfg.k - 1)
    if test is not None:
        for other_role, other in (("data.train", train), ("data.validation", validation)):
            other_ids = {row["id"] for row in other}
            overlap = next((row["id"] for row in test if row["id"] in other_ids), None)
            if overlap is not None:
                raise DataError(
                    f"data.test: id {overlap!r} is also in {other_role}; the test split must be held out "
                    "(if the ids are per-file row numbers, make them unique across files or drop the id column)"
                )
    warnings = _content_overlaps(test, {"data.train": train, "data.validation": validation}) if test else ()
    replay = tuple(_load_replay(cfg, index) for index in range(len(cfg.replay)))
    return Splits(train=train, validation=validation, test=test, warnings=warnings, folds=folds, replay=replay)


def _load_replay(cfg: DataConfig, index: int) -> ReplaySet:
    """data.replay[index] in its own format and columns (a shape error names data.replay.N.format/columns)."""
    source, key = cfg.replay[index], f"data.replay.{index}"
    own = cfg.model_copy(update={"format": source.format or cfg.format, "columns": source.columns or cfg.columns})
    return ReplaySet(source.data, source.weight, load_rows(source.data, own, key, key), own, key)


def _content_overlaps(test: Rows, others: dict[str, Rows]) -> tuple[str, ...]:
    """Test rows whose text (lower-cased, whitespace collapsed) is also in another split under another id: a leak
    the ids cannot show; a warning, since near-duplicate prompts can be legitimate."""
    test_hashes = {_text_hash(row): row["id"] for row in test}
    found = []
    for role, rows in others.items():
        shared = [test_hashes[h] for h in {_text_hash(row) for row in rows} if h in test_hashes]
        if shared:
            found.append(
                f"data.test: {len(shared)} of {len(test)} test rows have the same text as rows of {role} "
                f"(e.g. id {sorted(shared)[0]!r}); the gate's evidence is weaker when the model trained on them"
            )
    return tuple(found)


def _text_hash(row: dict[str, Any]) -> str:
    content = {key: row[key] for key in ("prompt", "completion", "messages", "text") if key in row}
    normalized = " ".join(canonical_json(content).lower().split())
    return hashlib.sha256(normalized.encode()).hexdigest()


def rows_fingerprint(rows: Rows) -> str:
    """Hash of the rows in order: any edit to the data, or to their order, changes it."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(canonical_json(row).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _read_file(path: Path, role: str) -> list[tuple[str, Any]]:
    """Raw rows with their location ('line 7' or 'row 7'), chosen by suffix."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                table = pq.read_table(path)
            except Exception as err:  # pyarrow raises several unrelated types for a bad file
                raise DataError(f"{role}: {path}: not a readable parquet file: {first_line(err)}") from None
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
            f"{role}: cannot load Hub dataset {name!r} split {split!r}: {first_line(err)} "
            f"(offline? set HF_HUB_OFFLINE=0 or point {role} at a local .jsonl file)"
        ) from None
    return [(f"row {i}", row) for i, row in enumerate(dataset.to_list(), start=1)]


def _normalize(raw: Any, cfg: DataConfig, prefix: str, settings_key: str) -> tuple[dict[str, Any], bool]:
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
                f"{prefix}: missing {source!r} (format {cfg.format} needs {needs}; "
                f"set {settings_key}.format to the file's format, or map its fields with {settings_key}.columns)"
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


def _check_messages(value: Any, source: str, prefix: str) -> Rows:
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


def _content_id(content: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()[:16]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]
