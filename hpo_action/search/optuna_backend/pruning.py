"""Pruning on the first objective. A single-objective trial reports to its own study's pruner. Optuna cannot prune a
multi-objective trial (`Trial.report` refuses), so its first objective's curve is mirrored, trial by trial, into a
companion single-objective study in the same storage, whose pruner decides; it resumes with the main study."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from hpo_action.config import HpoConfig
from hpo_action.interrupts import raise_if_pressed
from hpo_action.search.optuna_backend.optuna_compat import storage_of
from hpo_action.search.optuna_backend.samplers import make_pruner

if TYPE_CHECKING:
    import optuna

    from hpo_action.search.optuna_backend.forgetting_rungs import ForgettingRungs

COMPANION_SUFFIX = ".first-objective"
COMPANION_ATTR = "pruning_trial"  # the companion trial's number, on the main trial


def companion_study(study: optuna.Study, cfg: HpoConfig | None = None) -> optuna.Study | None:
    """The study the pruner of a multi-objective study works on (created on first use; None for one objective).
    Without `cfg` it is only loaded, e.g. to plot its intermediate values."""
    import optuna

    if len(study.directions) == 1:
        return None
    name = study.study_name + COMPANION_SUFFIX
    if cfg is None:
        try:
            return optuna.load_study(study_name=name, storage=storage_of(study))
        except KeyError:
            return None
    return optuna.create_study(
        study_name=name,
        storage=storage_of(study),
        sampler=optuna.samplers.RandomSampler(seed=cfg.search.seed),  # asks for no parameter: never samples
        pruner=make_pruner(cfg),
        direction=cfg.search.objective.direction,
        load_if_exists=True,
    )


class FirstObjectivePruning:
    """One trial's link to the pruner: `report(value, step)` says whether to stop; `finish` closes the mirror."""

    def __init__(
        self,
        trial: optuna.Trial,
        companion: optuna.Study | None,
        exempt: bool = False,
        rungs: ForgettingRungs | None = None,
    ) -> None:
        self.trial, self.companion, self.mirror = trial, companion, None
        self.exempt = exempt  # reports its values but is never stopped (the warm starts)
        self.rungs = rungs  # under the forgetting constraint: the probes' say before a stop (forgetting_rungs.py)
        if companion is not None:
            with warnings.catch_warnings():  # the mirror needs no heartbeat: the main trial beats for both
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
                self.mirror = companion.ask()
            trial.set_user_attr(COMPANION_ATTR, self.mirror.number)

    def report(self, value: float, step: int) -> bool:
        raise_if_pressed()  # each evaluation is where a swallowed Ctrl-C is caught up with
        target = self.mirror if self.mirror is not None else self.trial
        target.report(value, step)
        if self.exempt:
            return False
        prune = target.should_prune()
        if self.rungs is None:
            return prune
        stop = self.rungs.decide(prune, step)
        for name, excess in self.rungs.forgot.items():  # a constrained sampler then counts the trial infeasible
            self.trial.set_constraint(f"forgetting:{name}", excess)
        return stop

    def finish(self, state: str, value: float | None = None) -> None:
        """Close the mirror trial as COMPLETE (with the first objective's value), PRUNED or FAIL."""
        import optuna

        if self.companion is None or self.mirror is None:
            return
        chosen = optuna.trial.TrialState[state]
        self.companion.tell(self.mirror, value if chosen == optuna.trial.TrialState.COMPLETE else None, state=chosen)
        self.mirror = None
