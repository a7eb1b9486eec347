"""An Optuna study as typed records: every trial (TrialRecord), the finalist copied to best/, and the summary
(RunSummary) that every later stage reads; nothing after the search sees a Study or a FrozenTrial."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import HpoConfig
from hpo_action.layout import RunLayout
from hpo_action.search.backend import StudyView
from hpo_action.search.optuna_backend.duplicates import is_discarded
from hpo_action.search.optuna_backend.finalist import (
    DROP_ATTR,
    EXCESS_ATTR,
    SHORTFALL_ATTR,
    chosen_trial,
    feasible_count,
    first_value,
    judged_trial,
    pareto_front,
)
from hpo_action.search.optuna_backend.objective import CHECKPOINT_BYTES_ATTR, RESUMED_ATTR
from hpo_action.search.optuna_backend.pruning import COMPANION_ATTR, companion_study
from hpo_action.search.optuna_backend.slots import finished
from hpo_action.search.outputs import publish_trial
from hpo_action.search.selection import fallback_note, selection_rule
from hpo_action.search.space import warm_start_kind
from hpo_action.search.summary import BestTrial, RunSummary, Selection, TrialRecord, summarize_records

if TYPE_CHECKING:
    import optuna


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study, in order, as a typed record."""
    mirrored = _first_objective_curves(study)
    return [trial_record(t, mirrored.get(t.number)) for t in study.get_trials(deepcopy=False) if not is_discarded(t)]


def trial_record(t: optuna.trial.FrozenTrial, mirrored: list[tuple[int, float]] | None = None) -> TrialRecord:
    """One trial as a typed record; `mirrored`: its first-objective curve from the companion study (multi-objective)."""
    curve = t.user_attrs.get("curve") or mirrored or sorted(t.intermediate_values.items())
    value = first_value(t)
    if value is None and t.state.name == "PRUNED" and curve:
        value = curve[-1][1]  # what a pruned multi-objective trial reached (Optuna records it for one objective)
    return TrialRecord(
        number=t.number,
        state=t.state.name,
        value=value,
        steps=t.user_attrs.get("steps", max(t.intermediate_values, default=None)),
        seconds=t.user_attrs.get("seconds"),
        params=dict(sorted(t.params.items())),
        forgetting=dict(t.user_attrs.get(EXCESS_ATTR, {})),
        error=t.user_attrs.get("error", ""),
        curve=[[step, value] for step, value in curve],
        train_curve=list(t.user_attrs.get("train_curve", [])),
        fold_values=list(t.user_attrs.get("fold_values", [])),
        values=list(t.values or []) if len(t.values or []) > 1 else [],
        forgetting_drop=dict(t.user_attrs.get(DROP_ATTR, {})),
        resumed_from_step=int(t.user_attrs.get(RESUMED_ATTR, 0)),
        checkpoint_bytes=int(t.user_attrs.get(CHECKPOINT_BYTES_ATTR, 0)),
        warm_start=warm_start_kind(t.user_attrs),
    )


def study_view(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> StudyView:
    """The study after `trial` finished, for the live progress view: counts by state (no discarded repeat), the
    trials that count toward search.n_trials (an interrupted trial and its retry once) and the finalist so far."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        if not is_discarded(t):
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    finalist = chosen_trial(study)
    return StudyView(
        trial=trial_record(trial),
        counts=counts,
        finished=finished(study),
        best_number=None if finalist is None else finalist.number,
        best_value=None if finalist is None else first_value(finalist),
        values=list(trial.values or []),
    )


def importances(study: optuna.Study) -> dict[str, float]:
    """The first objective's parameter importances (Optuna's default evaluator), for the plots; empty when there
    are too few completed trials to tell."""
    import warnings

    import optuna

    target = first_value if len(study.directions) > 1 else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. too few trials: the importances are then equal
            return dict(optuna.importance.get_param_importances(study, target=target))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def _first_objective_curves(study: optuna.Study) -> dict[int, list[tuple[int, float]]]:
    """A multi-objective study's first-objective curves, which its companion study holds (optuna_backend/pruning.py):
    a pruned trial's last point is what it reached. Empty for one objective."""
    companion = companion_study(study)
    if companion is None:
        return {}
    mirrors = {t.number: sorted(t.intermediate_values.items()) for t in companion.get_trials(deepcopy=False)}
    return {
        t.number: mirrors[t.user_attrs[COMPANION_ATTR]]
        for t in study.get_trials(deepcopy=False)
        if mirrors.get(t.user_attrs.get(COMPANION_ATTR, -1))
    }


def publish_best(study: optuna.Study, layout: RunLayout, params: dict[str, Any]) -> Path | None:
    """Copy the chosen trial's saved weights to best/ with params.json; None when they were not kept.

    When best/ gets different weights, the gate's verdict on the old ones (gate.json, report.md) is deleted
    *before* the swap: a crash in between leaves no promote verdict next to weights nobody gated.
    """
    best = judged_trial(study)
    assert best is not None
    return publish_trial(layout.trial_dir(best.number), layout, best.number, first_value(best), params)


def summarize(
    study: optuna.Study,
    cfg: HpoConfig,
    storage: str,
    elapsed: float,
    best_dir: Path | None,
    params: dict[str, Any],
    stopped_early: str | None = None,
) -> RunSummary:
    """What the run found, for every later step (gate, card, report, the GitHub Action)."""
    records = trial_records(study)
    best = judged_trial(study)
    fallback = None
    if best is not None and chosen_trial(study) is None:
        fallback = fallback_note(best.number, float(best.user_attrs[SHORTFALL_ATTR]))
    objectives = cfg.search.objectives or [cfg.search.objective]
    selection = Selection(
        objectives=[{"metric": o.metric, "direction": str(o.direction)} for o in objectives],
        rule=selection_rule(cfg),
        pareto_front=[t.number for t in pareto_front(study)],
        feasible=feasible_count(study),
        fallback=fallback,
    )
    best_trial = None
    if best is not None:
        best_trial = BestTrial(
            number=best.number,
            value=float(best.values[0]),
            params=params,
            metrics=best.user_attrs.get("metrics", {}),
            forgetting_excess=best.user_attrs.get(EXCESS_ATTR, {}),
            adapter=os.path.relpath(best_dir, cfg.output.dir) if best_dir else None,
            forgetting_drop=best.user_attrs.get(DROP_ATTR, {}),
            values=list(best.values) if len(best.values) > 1 else [],
        )
    return summarize_records(
        cfg,
        records,
        study_name=study.study_name,
        storage=storage,
        sampler=cfg.search.sampler,
        pruner=cfg.search.pruner,
        elapsed=elapsed,
        n_trials=finished(study),
        best=best_trial,
        selection=selection,
        stopped_early=stopped_early,
    )
