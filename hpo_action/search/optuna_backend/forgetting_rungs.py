"""The pruner under search.forgetting_constraint: the forgetting probes are read before a trial is stopped on its
objective, so that the pruner compares among trials that may still be chosen (issue 22).

Remedies that keep a skill (replay, KL to the base) slow the new task: on eval_loss alone, a pruner stops those
trials first, and keeps the ones that learn fast because they forget (unseen_forgetting.py measured 23 of 40
sampled trials pruned at the first rung, the feasible ones among them). So, at an evaluation before the last where
the pruner proposes to stop a trial, its probes are read:
- every probe within its set's margin (point estimate): the trial is spared. It may still be chosen, and the
  gate's own test on its probe rows decides that at its end, as for every trial;
- a probe beyond its margin: the pruner's stop stands, and the probe excesses become the trial's constraint
  values, so a constrained sampler (TPE) counts it infeasible rather than as a pruned trial ranked by its loss.
No trial is stopped for forgetting alone: mid-trial forgetting does not predict the end. In the quickstart's
learning curves (benchmarks/results/curves_quickstart_probes.parquet) the copy skill drops most while the learning
rate is high and comes back as it decays, with replay and KL pulling it back: 32 of the 42 runs that end within the
margin were beyond it at half the budget, and an earlier rule that stopped such trials there pruned the best
configurations (benchmarks/RESULTS.md, issue 23 fourth and fifth rounds).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo_action.config import HpoConfig

INFEASIBLE = 1e-9  # the least constraint value of a set whose probe dropped beyond its margin (> 0: infeasible)
RUNGS_ATTR = "rung_probes"  # trial user attribute: [[step, verdict, {set: drop}]] at each probed evaluation
FORGOT, SPARED = "forgot", "spared"


@dataclass
class ForgettingRungs:
    """One trial's rung checks; `measure()` reads every probe on the model being trained ({} when it cannot)."""

    measure: Callable[[], dict[str, Any]]  # set name → ProbeReading (drop, excess); {} when nothing can be read yet
    margins: dict[str, float]
    max_steps: int
    log: list[list[Any]] = field(default_factory=list)
    forgot: dict[str, float] = field(default_factory=dict)  # set → constraint value, once stopped beyond a margin

    def decide(self, prune: bool, step: int) -> bool:
        """The verdict at an evaluation, given the pruner's: True stops the trial."""
        if step >= self.max_steps:
            return prune  # the last evaluation: the trial is complete, and its end-of-trial probe decides
        if not prune:
            return False
        readings = self.measure()
        if not readings:  # a resumed trial's replayed evaluation: its model is not loaded yet, so the pruner's
            return False  # proposal waits for the next evaluation the trial trains to
        drops = {name: round(float(r.drop), 6) for name, r in readings.items()}
        if any(r.drop > self.margins.get(name, math.inf) for name, r in readings.items()):
            self.forgot = {
                name: max(float(r.excess), INFEASIBLE) if r.drop > self.margins.get(name, math.inf) else float(r.excess)
                for name, r in readings.items()
            }
            verdict, stop = FORGOT, True
        else:
            verdict, stop = SPARED, False
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
    return ForgettingRungs(measure, cfg.gate.margins(), cfg.search.budget.max_steps)
