"""The interface every trial runner implements: what the study, the range test and the benchmarks call.

`TrialRunner` trains on one split (holdout, time); `CrossValidatedRunner` on every fold of a k-fold split. Code
that trains (the objective, `lr-find`, `search.lr_bounds: auto`) takes a `Runner`, never one of the two classes,
so a new validation strategy is a new implementation of this, not a new branch in its callers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hpo_action.config import HpoConfig
    from hpo_action.train.checkpoints import TrialCheckpoints
    from hpo_action.train.lr_find import LrRamp
    from hpo_action.train.models import BaseModel
    from hpo_action.train.trial import Reporter, TrialResult


class Runner(Protocol):
    """Trains a trial's parameters on the base model and the tokenized data loaded once for the study."""

    @property
    def cfg(self) -> HpoConfig: ...

    @property
    def base(self) -> BaseModel: ...

    def run(
        self,
        params: dict[str, Any],
        report: Reporter | None = None,
        save_to: Callable[[TrialResult], Path | None] | None = None,
        trial_number: int | None = None,
        checkpoints: TrialCheckpoints | None = None,
    ) -> TrialResult:
        """Train one trial; `report(value, step)` at each evaluation returns True to prune it, `save_to(result)`
        names the folder its weights go to (None: discarded); with `checkpoints` (search.resume_trials) it
        checkpoints at each evaluation and resumes from the last checkpoint written for the same parameters."""
        ...

    def range_test(self, params: dict[str, Any], ramp: LrRamp) -> list[tuple[int, float]]:
        """The training loss at each step of one run of `params` whose learning rate follows `ramp`, trained
        exactly as a trial of `params` would be otherwise (rows, replay, optimizer, KL to the base)."""
        ...

    def base_metrics(self, params: dict[str, Any]) -> dict[str, float]:
        """The validation metrics of the untrained model (a trial's adapter at its identity initialisation), as a
        trial's evaluation reports them: what the search's stopping rule measures learning against."""
        ...
