"""The study's outputs: trials.csv, best/ (the best trial's weights and parameters) and the typed summary,
each written atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import HpoConfig
from hpo_action.errors import OutputError
from hpo_action.files import is_no_space, write_text_atomic
from hpo_action.layout import RunLayout, claim, foreign_files, is_ours
from hpo_action.search.duplicates import is_discarded
from hpo_action.search.finalist import (
    DROP_ATTR,
    EXCESS_ATTR,
    chosen_trial,
    feasible_count,
    first_value,
    pareto_front,
    selection_rule,
)
from hpo_action.search.objective import CHECKPOINT_BYTES_ATTR, RESUMED_ATTR
from hpo_action.search.pruning import COMPANION_ATTR, companion_study
from hpo_action.search.slots import finished
from hpo_action.search.space import warm_start_kind
from hpo_action.search.storage import shown_storage
from hpo_action.search.summary import BestTrial, RunSummary, Selection, TrialRecord
from hpo_action.train.model_source import public_model_name
from hpo_action.train.models import adapter_sha256

if TYPE_CHECKING:
    import optuna


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study, in order, as a typed record."""
    mirrored = _first_objective_curves(study)
    records = []
    for t in study.get_trials(deepcopy=False):
        if is_discarded(t):  # a repeated proposal that was asked again is no trial of the study
            continue
        curve = t.user_attrs.get("curve") or mirrored.get(t.number) or sorted(t.intermediate_values.items())
        value = first_value(t)
        if value is None and t.state.name == "PRUNED" and curve:
            value = curve[-1][1]  # what a pruned multi-objective trial reached (Optuna records it for one objective)
        records.append(
            TrialRecord(
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
        )
    return records


def _first_objective_curves(study: optuna.Study) -> dict[int, list[tuple[int, float]]]:
    """A multi-objective study's first-objective curves, which its companion study holds (search/pruning.py):
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


def write_trials_csv(records: list[TrialRecord], path: Path) -> None:
    """One row per trial: number, state, value, steps, seconds, one column per parameter, per forgetting set its
    measured delta against the base (`forgetting_<set>`, as the report's trade-off line shows it; < 0: forgot) and
    its constraint value (`margin_excess_<set>`: how far the gate's lower bound on the probe rows falls below
    −margin; > 0: infeasible), for a PBT trial its schedule ([[step, {parameter: value}], ...]), error."""
    rows = []
    for record in records:
        row: dict[str, Any] = {k: getattr(record, k) for k in ("number", "state", "value", "steps", "seconds")}
        row.update({f"param_{k}": v for k, v in record.params.items()})
        row.update({f"forgetting_{k}": 0.0 - drop for k, drop in record.forgetting_drop.items()})
        row.update({f"margin_excess_{k}": v for k, v in record.forgetting.items()})
        if record.schedule:  # PBT: the parameters its weights trained under, from each step on
            row["schedule"] = json.dumps(record.schedule, separators=(",", ":"))
        rows.append({**row, "error": record.error})
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns or ["number", "state", "value", "steps", "seconds"])
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def publish_best(study: optuna.Study, layout: RunLayout, params: dict[str, Any]) -> Path | None:
    """Copy the chosen trial's saved weights to best/ with params.json; None when they were not kept.

    When best/ gets different weights, the gate's verdict on the old ones (gate.json, report.md) is deleted
    *before* the swap: a crash in between leaves no promote verdict next to weights nobody gated.
    """
    best = chosen_trial(study)
    assert best is not None
    return publish_trial(layout.trial_dir(best.number), layout, best.number, first_value(best), params)


def publish_trial(
    source: Path, layout: RunLayout, number: int, value: float | None, params: dict[str, Any]
) -> Path | None:
    """Copy one trial's saved weights (`source`) to best/ with params.json, whichever backend ran it; None when
    they were not kept."""
    if not source.is_dir():
        return None
    target, output = layout.best_dir, layout.root
    foreign = [target] if target.exists() and not is_ours(target, "trial") else foreign_files(target)
    if foreign:
        raise OutputError(f"output.dir: {foreign[0]} was not written by hpo-action; move it away (it would be deleted)")
    staging = Path(tempfile.mkdtemp(dir=output, prefix=".best-"))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        info = {"trial": number, "value": value, "params": params}
        (staging / layout.best_params.name).write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
        claim(staging, layout.best_params.name)
        if target.exists() and adapter_sha256(target) == adapter_sha256(staging):
            os.replace(staging / layout.best_params.name, layout.best_params)  # the same weights: keep the verdict
            shutil.rmtree(staging, ignore_errors=True)
            return target
        for stale in (layout.gate, layout.manifest, layout.report):
            stale.unlink(missing_ok=True)
        if target.exists():
            old = output / f".best-old-{os.getpid()}"
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException as err:
        shutil.rmtree(staging, ignore_errors=True)
        if is_no_space(err):
            raise OutputError(
                f"output.dir: no space left on the device while writing {target}; free space or set output.dir "
                "elsewhere, then run the same command again (the finished trials are kept)"
            ) from None
        raise
    return target


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
    counts: dict[str, int] = {}
    for record in records:
        counts[record.state] = counts.get(record.state, 0) + 1
    best = chosen_trial(study)
    objectives = cfg.search.objectives or [cfg.search.objective]
    selection = Selection(
        objectives=[{"metric": o.metric, "direction": str(o.direction)} for o in objectives],
        rule=selection_rule(cfg),
        pareto_front=[t.number for t in pareto_front(study)],
        feasible=feasible_count(study),
    )
    return RunSummary(
        study_name=study.study_name,
        storage=shown_storage(storage, Path(cfg.output.dir)),
        objective_metric=cfg.search.objective.metric,
        objective_direction=str(cfg.search.objective.direction),
        method=cfg.model.method,
        base_model=public_model_name(cfg.model),
        sampler=cfg.search.sampler,
        pruner=cfg.search.pruner,
        states=counts,
        elapsed_s=round(elapsed, 2),
        total_steps=sum(int(r.steps or 0) for r in records),
        trials=tuple(records),
        n_trials=finished(study),
        stopped_early=stopped_early,
        best=None
        if best is None
        else BestTrial(
            number=best.number,
            value=float(best.values[0]),
            params=params,
            metrics=best.user_attrs.get("metrics", {}),
            forgetting_excess=best.user_attrs.get(EXCESS_ATTR, {}),
            adapter=os.path.relpath(best_dir, cfg.output.dir) if best_dir else None,
            forgetting_drop=best.user_attrs.get(DROP_ATTR, {}),
            values=list(best.values) if len(best.values) > 1 else [],
        ),
        selection=selection,
    )
