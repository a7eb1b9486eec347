"""What a study found, as typed records: every trial, the best one, and the study around them (summary.json).

The terminal, the job summary, report.md and the model card render a `RunSummary`; none re-reads summary.json,
trials.csv or best/params.json by key.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.errors import OutputError
from hpo_action.files import write_text_atomic

if TYPE_CHECKING:
    from hpo_action.config import HpoConfig


@dataclass(frozen=True)
class TrialRecord:
    """One trial as trials.csv and the tables show it."""

    number: int
    state: str
    value: float | None
    steps: int | None
    seconds: float | None
    params: dict[str, Any] = field(default_factory=dict)  # the searched parameters the sampler chose
    forgetting: dict[str, float] = field(default_factory=dict)  # drop beyond the margin per set (> 0: forgot)
    error: str = ""
    curve: list[list[float]] = field(default_factory=list)  # [step, objective] at each evaluation
    train_curve: list[list[float]] = field(default_factory=list)  # [step, training loss] at each log
    fold_values: list[float] = field(default_factory=list)  # kfold: each fold's objective
    values: list[float] = field(default_factory=list)  # one per objective (multi-objective studies)
    forgetting_drop: dict[str, float] = field(default_factory=dict)  # the probes' drop against the base per set
    resumed_from_step: int = 0  # search.resume_trials: the checkpoint's step this trial resumed from (0: none)
    checkpoint_bytes: int = 0  # search.resume_trials: the size of its last checkpoint
    warm_start: str = ""  # a queued warm start: "defaults" (the train section) or "strong remedies"; "" otherwise
    schedule: list[list[Any]] = field(default_factory=list)  # PBT: [step, {parameter: value}] its weights went through


@dataclass(frozen=True)
class BestTrial:
    number: int
    value: float
    params: dict[str, Any]  # every trial parameter: the train defaults, the searched ones, a batch override
    metrics: dict[str, float]
    forgetting_excess: dict[str, float]
    adapter: str | None  # "best" (relative to the output folder) when its weights were kept
    forgetting_drop: dict[str, float] = field(default_factory=dict)  # the probes' drop against the base per set
    values: list[float] = field(default_factory=list)  # one per objective (multi-objective studies)


@dataclass(frozen=True)
class FinalistsRecord:
    """search.finalists: how many trials were retrained, on which seeds, and what the bound changed."""

    top_k: int
    seeds: list[int]  # the extra training seeds (the search's own, train.seed, comes first)
    confidence: float  # one-sided level of the bound on each finalist's mean (search/reseed_finalists.py)
    search_pick: int  # the trial the single-run rule would have chosen
    chosen: int
    steps: int  # training steps the retraining spent


@dataclass(frozen=True)
class Selection:
    """How the finalist was chosen: the objectives, the rule in words, and the Pareto front (multi-objective)."""

    objectives: list[dict[str, str]]  # [{"metric", "direction"}], the first pruned on and deciding
    rule: str
    pareto_front: list[int] = field(default_factory=list)  # trial numbers, non-dominated
    feasible: int | None = None  # completed trials whose every forgetting probe passed the gate's test; None: no probe
    finalists: FinalistsRecord | None = None  # search.finalists: the retraining that chose the trial
    fallback: str | None = None  # no trial was feasible: which trial the gate judges instead, and why (selection.py)


@dataclass(frozen=True)
class RunSummary:
    """summary.json: the study, its trials and its best trial."""

    study_name: str
    storage: str  # redacted; a file storage inside the output folder relative to it (search/naming.py)
    objective_metric: str
    objective_direction: str
    method: str
    base_model: str  # its public name (train/model_source.py), never a folder of this machine
    sampler: str
    pruner: str
    states: dict[str, int]
    elapsed_s: float
    total_steps: int
    trials: tuple[TrialRecord, ...]
    best: BestTrial | None
    n_trials: int  # the trials that count toward search.n_trials: an interrupted trial and its retry count once
    stopped_early: str | None = None  # why the study ended short of its target, e.g. search.timeout
    selection: Selection | None = None

    @property
    def multi_objective(self) -> bool:
        return self.selection is not None and len(self.selection.objectives) > 1

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSummary:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["trials"] = tuple(TrialRecord(**t) for t in data.get("trials", ()))
        values["best"] = BestTrial(**data["best"]) if data.get("best") else None
        selection = dict(data.get("selection") or {})
        if selection.get("finalists"):
            selection["finalists"] = FinalistsRecord(**selection["finalists"])
        values["selection"] = Selection(**selection) if selection else None
        return cls(**values)

    def write(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.to_json(), indent=2, default=str) + "\n")

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise OutputError(f"{path}: not a summary.json this version can read ({type(err).__name__})") from None


def summarize_records(
    cfg: HpoConfig,
    records: list[TrialRecord],
    *,
    study_name: str,
    storage: str,
    sampler: str,
    pruner: str,
    elapsed: float,
    n_trials: int,
    best: BestTrial | None,
    selection: Selection,
    stopped_early: str | None = None,
) -> RunSummary:
    """A RunSummary from a backend's trial records: the parts every backend fills the same way (the objective, the
    method, the public model name, the storage as shown, the counts by state, the steps) come from here."""
    from hpo_action.search.naming import shown_storage
    from hpo_action.train.model_source import public_model_name

    counts: dict[str, int] = {}
    for record in records:
        counts[record.state] = counts.get(record.state, 0) + 1
    return RunSummary(
        study_name=study_name,
        storage=shown_storage(storage, Path(cfg.output.dir)),
        objective_metric=cfg.search.objective.metric,
        objective_direction=str(cfg.search.objective.direction),
        method=cfg.model.method,
        base_model=public_model_name(cfg.model),
        sampler=sampler,
        pruner=pruner,
        states=counts,
        elapsed_s=round(elapsed, 2),
        total_steps=sum(int(r.steps or 0) for r in records),
        trials=tuple(records),
        n_trials=n_trials,
        stopped_early=stopped_early,
        best=best,
        selection=selection,
    )
