"""The pruner under search.forgetting_constraint: the forgetting probes are read before a trial is stopped on its
objective, so that the pruner compares among trials that may still be chosen (issue 22).

Remedies that keep a skill (replay, KL to the base) slow the new task: on eval_loss alone, a pruner stops those
trials first, and keeps the ones that learn fast because they forget (unseen_forgetting.py measured 23 of 40
sampled trials pruned at the first rung, the feasible ones among them). So, at an evaluation before the last:
- a trial whose probe already dropped beyond a set's margin (point estimate) is pruned, whatever its objective:
  forgetting grows with training on the new task, so it would end infeasible, and its steps are saved. Its probe
  excesses become its constraint values, so a constrained sampler (TPE) counts it infeasible, not as a pruned
  trial ranked by its (often good) loss, and draws away from the region that forgets;
- a trial the pruner would stop whose every probe is within its margin (point estimate) is spared: it may still
  be chosen, and the gate's own test on its probe rows decides that at its end, as for every trial.
So under the constraint the pruner stops trials for forgetting, not for learning slower than those that forget.
The probes run only where they can change a decision: once at the first evaluation at or past half the budget
(the forgetting check), and at each evaluation where the pruner proposes to stop the trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo_action.config import HpoConfig

INFEASIBLE = 1e-9  # the least constraint value of a set whose probe dropped beyond its margin (> 0: infeasible)
RUNGS_ATTR = "rung_probes"  # trial user attribute: [[step, verdict, {set: drop}]] at each probed evaluation
FORGOT, SPARED, KEPT_ON = "forgot", "spared", "continued"


@dataclass
class ForgettingRungs:
    """One trial's rung checks; `measure()` reads every probe on the model being trained ({} when it cannot)."""

    measure: Callable[[], dict[str, Any]]  # set name → ProbeReading (drop, excess); {} when nothing can be read yet
    margins: dict[str, float]
    max_steps: int
    log: list[list[Any]] = field(default_factory=list)
    checked: bool = False  # the half-budget forgetting check ran
    forgot: dict[str, float] = field(default_factory=dict)  # set → constraint value, once stopped for forgetting

    def decide(self, prune: bool, step: int) -> bool:
        """The verdict at an evaluation, given the pruner's: True stops the trial."""
        if step >= self.max_steps:
            return prune  # the last evaluation: the trial is complete, and its end-of-trial probe decides
        due = not self.checked and 2 * step >= self.max_steps
        if not (prune or due):
            return False
        readings = self.measure()
        if not readings:  # a resumed trial's replayed evaluation: its model is not loaded yet, so the check (and
            return False  # the pruner's proposal) wait for the next evaluation the trial trains to
        self.checked = self.checked or due
        drops = {name: round(float(r.drop), 6) for name, r in readings.items()}
        if any(r.drop > self.margins.get(name, math.inf) for name, r in readings.items()):
            self.forgot = {
                name: max(float(r.excess), INFEASIBLE) if r.drop > self.margins.get(name, math.inf) else float(r.excess)
                for name, r in readings.items()
            }
            verdict, stop = FORGOT, True
        else:
            verdict, stop = (SPARED if prune else KEPT_ON), False
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
