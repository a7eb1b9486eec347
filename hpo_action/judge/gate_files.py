"""Forgetting pairs given as prediction files (`hpo-action gate --forgetting NAME=CAND,REF[,MARGIN[,METRIC]]`),
parsed into typed pairs before any file is read."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hpo_action.config import BOOLEAN_MARGIN, GateConfig
from hpo_action.errors import ConfigError
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.gate import ForgettingInput, choose_metric, gate, pair
from hpo_action.judge.predictions import read_meta, read_predictions
from hpo_action.judge.sequence import per_gate

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


def gate_prediction_files(
    candidate: Path,
    reference: Path,
    cfg: GateConfig,
    metric: str | None = None,
    forgetting: Sequence[ForgettingFiles] = (),
) -> GateDecision:
    """Gate two prediction files (and forgetting pairs) from anywhere.

    The metric is never guessed: `metric`, else the first metric evaluate recorded in the candidate's meta.json,
    else the only numeric field the files share; forgetting pairs use their own, else the primary's name."""
    cand_rows, ref_rows = read_predictions(candidate), read_predictions(reference)
    recorded = read_meta(candidate).get("metrics") or [None]
    how = "choose one with --metric"
    metric = choose_metric(cand_rows, ref_rows, metric or recorded[0], f"{candidate} and {reference}", how)
    inputs = []
    for files in forgetting:
        name = files.name
        cand_f, ref_f = read_predictions(files.candidate), read_predictions(files.reference)
        how = f"name it: --forgetting {name}=CAND,REF,MARGIN,METRIC"
        chosen = choose_metric(cand_f, ref_f, files.metric or metric, f"--forgetting {name}", how)
        paired = pair(cand_f, ref_f, chosen, names=(f"{name} candidate", f"{name} reference"))
        inputs.append(ForgettingInput(name, paired, margin_for(files, paired.boolean, chosen)))
    vocab_size = read_meta(candidate).get("vocab_size")
    decision = gate(pair(cand_rows, ref_rows, metric), inputs, cfg, vocab_size=vocab_size)
    sequence = per_gate(cfg.alpha).to_json()  # no registry here: per-gate control, said so in gate.json
    decision = replace(decision, config=replace(decision.config, sequence=sequence))
    return decision
