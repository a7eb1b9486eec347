"""Forgetting pairs given as prediction files (`hpo-action gate --forgetting NAME=CAND,REF[,MARGIN[,METRIC]]`),
parsed into typed pairs before any file is read."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from hpo_action.config import BOOLEAN_MARGIN
from hpo_action.errors import ConfigError

USAGE = "NAME=CANDIDATE.jsonl,REFERENCE.jsonl[,MARGIN[,METRIC]]"


@dataclass(frozen=True)
class ForgettingFiles:
    """One forgetting set scored for the candidate and for the reference, with its margin and metric."""

    name: str
    candidate: Path
    reference: Path
    margin: float | None  # None: the boolean default; a score metric must give one
    metric: str | None = None  # None: the primary metric's name

    @classmethod
    def parse(cls, item: str) -> ForgettingFiles:
        """One `--forgetting` item; an empty MARGIN keeps a boolean metric's default (a score has none)."""
        name, sep, rest = item.partition("=")
        parts = rest.split(",")
        if not sep or not name or len(parts) not in (2, 3, 4):
            raise ConfigError(f"--forgetting {item!r}: expected {USAGE}")
        margin_text = parts[2] if len(parts) > 2 and parts[2] else None
        try:
            margin = float(margin_text) if margin_text else None
        except ValueError:
            raise ConfigError(f"--forgetting {item!r}: the margin {margin_text!r} is not a number") from None
        if margin is not None and not (math.isfinite(margin) and margin >= 0):
            raise ConfigError(f"--forgetting {item!r}: the margin must be a finite number >= 0, got {margin_text}")
        metric = parts[3] if len(parts) == 4 and parts[3] else None
        return cls(name, Path(parts[0]), Path(parts[1]), margin, metric)


def parse_forgetting_files(items: tuple[str, ...]) -> list[ForgettingFiles]:
    """Every `--forgetting` item, each name once."""
    parsed = [ForgettingFiles.parse(item) for item in items]
    names = [entry.name for entry in parsed]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise ConfigError(f"--forgetting: the name {duplicate!r} is given twice; give each benchmark its own name")
    return parsed


def margin_for(files: ForgettingFiles, boolean: bool, metric: str) -> float:
    """The given margin, else the boolean default; a score metric without one is refused, naming the field."""
    if files.margin is not None:
        return files.margin
    if boolean:
        return BOOLEAN_MARGIN
    raise ConfigError(
        f"--forgetting {files.name}: {metric} is a score, so there is no default margin; give MARGIN in "
        f"{metric} units: {files.name}=CAND,REF,MARGIN"
    )
