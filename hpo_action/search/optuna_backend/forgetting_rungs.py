"""The pruner under search.forgetting_constraint: the forgetting probes are read before a trial is stopped on its
objective, so that the pruner compares among trials that may still be chosen (issue 22).

Remedies that keep a skill (replay, KL to the base) slow the new task: on eval_loss alone, a pruner stops those
trials first, and keeps the ones that learn fast because they forget (unseen_forgetting.py measured 23 of 40
sampled trials pruned at the first rung, the feasible ones among them). So, at an evaluation before the last:
- a trial whose probe already dropped beyond a set's margin (point estimate) is pruned, whatever its objective:
  forgetting grows with training on the new task, so it would end infeasible, and its steps are saved;
- a trial the pruner would stop, whose probes pass the gate's own test, is spared: it keeps the skills so far;
- otherwise the pruner decides.
The probes run only where they can change a decision: once at the first evaluation at or past half the budget
(the forgetting check), and at each evaluation where the pruner proposes to stop the trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo_action.config import HpoConfig

RUNGS_ATTR = "rung_probes"  # trial user attribute: [[step, verdict, {set: drop}]] at each probed evaluation
FORGOT, SPARED, PRUNED, KEPT_ON = "forgot", "spared", "pruned", "continued"


@dataclass
class ForgettingRungs:
    """One trial's rung checks; `measure()` reads every probe on the model being trained ({} when it cannot)."""

    measure: Callable[[], dict[str, Any]]  # set name → ProbeReading (drop, excess)
    margins: dict[str, float]
    max_steps: int
    log: list[list[Any]] = field(default_factory=list)
    checked: bool = False  # the half-budget forgetting check ran

    def decide(self, prune: bool, step: int) -> bool:
        """The verdict at an evaluation, given the pruner's: True stops the trial."""
        if step >= self.max_steps:
            return prune  # the last evaluation: the trial is complete, and its end-of-trial probe decides
        due = not self.checked and 2 * step >= self.max_steps
        if not (prune or due):
            return False
        self.checked = self.checked or due
        readings = self.measure()
        if not readings:
            return prune
        drops = {name: round(float(r.drop), 6) for name, r in readings.items()}
        if any(r.drop > self.margins.get(name, math.inf) for name, r in readings.items()):
            verdict, stop = FORGOT, True
        elif prune and all(r.excess <= 0 for r in readings.values()):
            verdict, stop = SPARED, False
        else:
            verdict, stop = (PRUNED, True) if prune else (KEPT_ON, False)
        self.log.append([step, verdict, drops])
        return stop


def forgetting_rungs(cfg: HpoConfig, runner: Any) -> ForgettingRungs | None:
    """The trial's rung checks when a pruner runs, the forgetting constraint holds for a single objective and the
    runner can probe the model it is training (TrialRunner.probe_now); None otherwise (the pruner alone decides)."""
    measure = getattr(runner, "probe_now", None)
    search = cfg.search
    if not search.forgetting_constraint or search.multi_objective or search.pruner == "none" or measure is None:
        return None
    if not getattr(runner, "probes", ()):
        return None
    margins = {b.name: float(b.margin) for b in cfg.gate.forgetting if b.margin is not None}
    return ForgettingRungs(measure, margins, cfg.search.budget.max_steps)
