"""The search-backend interface: start or resume a study, run its trials, and hand back typed results.

Every stage after the search (outputs, plots, the gate, the card, the reports) reads what a backend returns here, a
`SearchResult` around the `RunSummary` (search/summary.py), and never the engine's own objects. Two backends
implement it: Optuna (search/optuna_backend/, the default) and Ray Tune (search/ray_backend.py); only a backend
imports its engine.

What a backend needs from the stages around it (loading the model, the range test, the live progress view, the log
sections) comes in as `SearchHooks`, so the search room imports no entry point and no report.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from rich.console import Console

from hpo_action.config import HpoConfig
from hpo_action.data.loading import Splits
from hpo_action.data.rows import Rows
from hpo_action.search.summary import RunSummary, TrialRecord
from hpo_action.train.runner import Runner

MakeRunner = Callable[[HpoConfig, Splits, Any, Console], Runner]
"""Loads the base model and tokenizes, once per process (session.trial_runner): (cfg, splits, forgetting sets or
None, console) -> Runner. A module-level function, so that a backend can ship it to other processes."""


@dataclass(frozen=True)
class StudyView:
    """The study after one more trial finished, for the live progress view: the trial, the counts by state, the
    trials that count toward search.n_trials and the finalist so far."""

    trial: TrialRecord
    counts: dict[str, int]
    finished: int
    best_number: int | None = None
    best_value: float | None = None
    values: list[float] = field(default_factory=list)  # the trial's value on each objective (empty: none)


class Progress(Protocol):
    """A live view of the study (report/terminal.py's StudyProgress)."""

    def update(self, view: StudyView) -> None: ...


@dataclass(frozen=True)
class SearchHooks:
    """What the search borrows from the stages around it."""

    make_runner: MakeRunner
    find_lr: Callable[[HpoConfig, Runner | None], float]  # search.lr_bounds auto: the range test's suggestion
    prepare_workers: Callable[[HpoConfig], None]  # worker processes: fail early, tokenize once, print the banner
    progress: Callable[[int, int], AbstractContextManager[Progress]]  # (target, already finished) -> a live view
    section: Callable[[str], AbstractContextManager[None]]  # a foldable section of the log


@dataclass(frozen=True)
class SearchRequest:
    """One search command: the config, the data, and how many trials to add (None: up to search.n_trials; 0: run
    none, read the study as it is, e.g. the leader after search workers)."""

    cfg: HpoConfig
    splits: Splits
    forgetting_sets: dict[str, Rows]
    console: Console
    hooks: SearchHooks
    extra_trials: int | None = None
    allow_partial: bool = False  # with extra_trials 0: accept a study that is not complete


@dataclass(frozen=True)
class SearchResult:
    """What a study left for the stages after it."""

    summary: RunSummary  # every trial, the finalist (copied to best/), the counts, the Pareto front
    base: Any = None  # the loaded base model when this process ran the trials (no worker processes), for reuse
    importances: dict[str, float] = field(default_factory=dict)  # the first objective's parameter importances
    notices: tuple[str, ...] = ()  # what the run must say when the study ends (the stopping rule's message)


class SearchBackend(Protocol):
    """Starts or resumes the study named by the config, runs its trials, and returns typed results."""

    def search(self, request: SearchRequest) -> SearchResult: ...


def backend_for(cfg: HpoConfig) -> SearchBackend:
    """The backend search.backend names (the engine is imported only when a study runs)."""
    if cfg.search.backend == "ray":
        from hpo_action.search.ray_backend import RayBackend

        return RayBackend()
    from hpo_action.search.optuna_backend.backend import OptunaBackend

    return OptunaBackend()
