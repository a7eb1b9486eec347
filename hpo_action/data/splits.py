"""Validation strategies: which rows validate a trial.

- holdout: one validation split (a given file, or a seeded share of train);
- kfold: train and validation pooled and cut into k seeded folds; a trial trains once per fold;
- time: rows ordered by a time field, the latest share validates (and, without a test file, the very latest
  share is the test split).

The test split is never part of any of them: a test file is read apart, and a time-cut test split is taken
before validation is.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from hpo_action.config import DataConfig
from hpo_action.data.rows import Rows
from hpo_action.errors import DataError


@dataclass(frozen=True)
class Folds:
    """k folds of one pool of rows: each row's fold, by id. Fold i validates; the other k−1 train."""

    k: int
    pool: tuple[dict[str, Any], ...]
    assignment: dict[str, int]

    def split(self, fold: int) -> tuple[Rows, Rows]:
        """(train, validation) rows of one fold, in pool order."""
        train = [row for row in self.pool if self.assignment[row["id"]] != fold]
        return train, [row for row in self.pool if self.assignment[row["id"]] == fold]


def _ranked(rows: Rows, seed: int) -> Rows:
    """A seeded order by hashing (seed, id): the same whatever the file order."""
    return sorted(rows, key=lambda row: hashlib.sha256(f"{seed}:{row['id']}".encode()).digest())


def holdout_share(rows: Rows, fraction: float, seed: int) -> tuple[Rows, Rows]:
    """Hold out a seeded share of the rows: (kept, held out), each in the rows' own order."""
    if len(rows) < 2:
        raise DataError(
            f"data.train: needs at least 2 rows to hold out a validation split (got {len(rows)}); "
            "add rows or set data.validation"
        )
    n_held = min(max(1, round(len(rows) * fraction)), len(rows) - 1)
    held = {row["id"] for row in _ranked(rows, seed)[:n_held]}
    return [r for r in rows if r["id"] not in held], [r for r in rows if r["id"] in held]


def make_folds(pool: Rows, k: int, seed: int) -> Folds:
    """k folds of near-equal size (sizes differ by at most one), assigned by the seeded hash order."""
    if len(pool) < 2 * k:
        raise DataError(
            f"data.k: {k} folds need at least {2 * k} rows in train and validation together (got {len(pool)}); "
            "lower data.k or use validation_strategy holdout"
        )
    assignment = {row["id"]: position % k for position, row in enumerate(_ranked(pool, seed))}
    return Folds(k=k, pool=tuple(pool), assignment=assignment)


def parse_time(value: Any) -> float:
    """Seconds since the epoch from ISO 8601 text (a trailing Z allowed; no zone means UTC), epoch seconds as a
    number or numeric text, or a date/datetime (parquet); ValueError when it is none of these."""
    if isinstance(value, bool) or value is None:
        raise ValueError("not a time")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, datetime):
        number = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    elif isinstance(value, date):
        number = datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()
    elif isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            number = parse_time(datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text))
    else:
        raise ValueError("not a time")
    if not math.isfinite(number):
        raise ValueError("not a finite time")
    return number


def by_time(rows: Rows, field: str, role: str) -> Rows:
    """The rows oldest first (ties by id); a missing or unparseable time is a DataError naming the row."""
    keyed = []
    for row in rows:
        if row.get(field) in (None, ""):
            raise DataError(
                f"{role}: row id {row['id']!r} has no {field!r}; validation_strategy time needs a time in every row "
                "(set data.time_field to the column that holds it)"
            )
        try:
            keyed.append((parse_time(row[field]), str(row["id"]), row))
        except ValueError:
            raise DataError(
                f"{role}: row id {row['id']!r}: {field} {row[field]!r} is not a time "
                "(use ISO 8601 text such as 2024-05-01T12:00:00Z, or epoch seconds)"
            ) from None
    return [row for _, _, row in sorted(keyed, key=lambda item: item[:2])]


def latest_share(ordered: Rows, fraction: float, what: str) -> tuple[Rows, Rows]:
    """(earlier rows, the latest `fraction` of them) of rows ordered oldest first."""
    if len(ordered) < 2:
        raise DataError(f"data.train: needs at least 2 rows to cut a time-based {what} split (got {len(ordered)})")
    n_latest = min(max(1, round(len(ordered) * fraction)), len(ordered) - 1)
    return ordered[:-n_latest], ordered[-n_latest:]


def time_splits(train: Rows, test: Rows | None, cfg: DataConfig) -> tuple[Rows, Rows, Rows | None]:
    """(train, validation, test) by time: without a test file, the latest share of all rows is the test split,
    then the latest share of the rest validates; a test file is left as it is."""
    assert cfg.time_field is not None
    ordered = by_time(train, cfg.time_field, "data.train")
    if test is None:
        ordered, test = latest_share(ordered, cfg.validation_fraction, "test")
    earlier, validation = latest_share(ordered, cfg.validation_fraction, "validation")
    return earlier, validation, test
