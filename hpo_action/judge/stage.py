"""The evaluate-and-gate stage: the search's finalist is scored once on the test split (after its decoding search,
when asked) against the reference, and the gate decides. Its one hand-off is the GateDecision."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from hpo_action.config import HpoConfig
from hpo_action.data.loading import Splits
from hpo_action.data.rows import Rows
from hpo_action.errors import TrialError
from hpo_action.files import write_text_atomic
from hpo_action.judge.assess import evaluate_and_gate
from hpo_action.judge.decision import GateDecision
from hpo_action.judge.decoding import DecodingSearch, search_decoding
from hpo_action.judge.evaluate import attach_trained
from hpo_action.judge.generation import write_generation_config
from hpo_action.layout import RunLayout
from hpo_action.search.backend import SearchResult
from hpo_action.search.summary import RunSummary
from hpo_action.train.models import BaseModel, load_base_model

NO_FINALIST = (
    "no completed trial to evaluate: all were pruned or failed; lower the learning-rate range or raise the pruner's "
    "first rung (search.pruner)"
)


@dataclass(frozen=True)
class Reference:
    """What the candidate is gated against on the test split: the champion's stored predictions, its weights to
    re-evaluate, or (neither) the base model."""

    predictions: Path | None = None
    model_dir: Path | None = None


@dataclass(frozen=True)
class StageHooks:
    """How the stage shows itself: a foldable log section, and the decoding search's table."""

    section: Callable[[str], AbstractContextManager[None]]
    show_decoding: Callable[[DecodingSearch], None]


def evaluate_stage(
    cfg: HpoConfig,
    searched: SearchResult,
    splits: Splits,
    sets: dict[str, Rows],
    reference: Reference,
    console: Console,
    hooks: StageHooks,
) -> GateDecision:
    """Evaluate the finalist in best/ against `reference` and gate it (gate.json, the predictions files)."""
    adapter = finalist_adapter(cfg, searched.summary)
    base = searched.base or load_base_model(cfg.model)  # worker processes kept theirs; they have exited
    if cfg.evaluate.decoding_search:
        with hooks.section("decoding search"):
            hooks.show_decoding(tune_adapter_decoding(cfg, base, adapter, splits.validation))
    selection = searched.summary.selection
    notes = (selection.fallback,) if selection is not None and selection.fallback else ()
    for note in notes:
        console.print(f"[yellow]{note}[/yellow]")
    console.print(f"evaluating trial #{searched.summary.best.number} on {len(splits.test or [])} test examples")
    with hooks.section("evaluate and gate"):
        decision = evaluate_and_gate(cfg, base, splits, adapter, sets, reference.predictions, reference.model_dir)
    if notes:  # the search's word on the candidate goes first among the reasons, in gate.json too
        decision = replace(decision, reasons=(*notes, *decision.reasons))
        decision.write(RunLayout(Path(cfg.output.dir)).gate)
    return decision


def finalist_adapter(cfg: HpoConfig, summary: RunSummary) -> Path:
    """The finalist's weights (best/), or why there is nothing to evaluate."""
    if summary.best is None:
        raise TrialError(NO_FINALIST)
    if not summary.best.adapter:
        raise TrialError("the best trial's weights were not kept, so there is nothing to evaluate")
    return Path(cfg.output.dir) / summary.best.adapter  # summary.json names it relative to the output folder


def tune_adapter_decoding(
    cfg: HpoConfig, base: BaseModel, adapter: Path, validation: list[dict[str, Any]]
) -> DecodingSearch:
    """Tune the adapter's generation settings on the validation split; save them beside it (and decoding.json)."""
    model, _ = attach_trained(base, adapter)
    try:
        result = search_decoding(model, base.tokenizer, validation, cfg)
    finally:
        if hasattr(model, "unload"):
            base.model = model.unload()  # the bare base again, for whatever is scored next
    write_generation_config(adapter, result.best.decoding, base.model.generation_config.to_dict())
    write_text_atomic(RunLayout(Path(cfg.output.dir)).decoding, json.dumps(result.to_json(), indent=2) + "\n")
    return result
