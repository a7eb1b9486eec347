"""Predictions files: JSONL, one object per example, plus a `.meta.json` that says what produced them.

Written by `evaluate`, read by `gate` (no torch here). A value that is not a finite number the statistics can
add up without overflow is refused with the file, the line and the id, because a gate that divides by infinity
decides nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hpo_action.errors import GateError
from hpo_action.files import write_text_atomic

# Sums of squares and cubes of per-example scores must stay finite; a loss or perplexity beyond this is a
# diverged model, not a measurement.
LARGEST_SCORE = 1e100
RecordsById = dict[str, dict[str, Any]]


def meta_path(predictions: Path) -> Path:
    """`preds.jsonl` → `preds.meta.json`, beside the predictions it describes."""
    predictions = Path(predictions)
    return predictions.with_name(predictions.name.removesuffix(".jsonl") + ".meta.json")


def write_predictions(records: list[dict[str, Any]], path: Path, meta: dict[str, Any]) -> None:
    """Predictions JSONL and its meta.json, each written atomically; a NaN fails here, not in the gate."""
    path = Path(path)
    text = "".join(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n" for record in records)
    write_text_atomic(path, text)
    write_text_atomic(meta_path(path), json.dumps(meta, indent=2, allow_nan=False, default=str) + "\n")


def read_meta(predictions: Path) -> dict[str, Any]:
    """The meta.json beside a predictions file, or {} when there is none (files from elsewhere)."""
    path = meta_path(predictions)
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise GateError(f"{path}: not a valid JSON meta file; delete it or fix it") from None
    return meta if isinstance(meta, dict) else {}


def read_predictions(path: str | Path) -> RecordsById:
    """A predictions JSONL keyed by id; errors name the file, the line and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise GateError(f"{path}: predictions file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise GateError(f"{path}: not UTF-8 text (byte {err.start}); write predictions as UTF-8 JSONL") from None
    rows: RecordsById = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line, parse_constant=_refuse_constant(where))
        except json.JSONDecodeError as err:
            raise GateError(f"{where}: not valid JSON: {err.msg}") from None
        if not isinstance(row, dict) or "id" not in row:
            raise GateError(f"{where}: each line must be an object with an 'id'")
        key = str(row["id"])
        if key in rows:
            raise GateError(f"{where}: duplicate id {key!r}")
        for field, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > LARGEST_SCORE:
                raise GateError(f"{where}: id {key!r}: {field} = {value:g} is beyond ±{LARGEST_SCORE:g}")
        rows[key] = row
    if not rows:
        raise GateError(f"{path}: no predictions (the file is empty)")
    return rows


def _refuse_constant(where: str) -> Any:
    def refuse(name: str) -> None:
        raise GateError(f"{where}: {name} is not a finite number; scores must be finite")

    return refuse


def numeric_fields(rows: RecordsById) -> list[str]:
    """Fields that hold a boolean or a number in every row, in the order of the first row."""
    first = next(iter(rows.values()))
    return [
        key
        for key in first
        if key not in ("id", "output") and all(isinstance(row.get(key), (bool, int, float)) for row in rows.values())
    ]
