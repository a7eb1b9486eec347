"""Stop a search that has learned nothing it may keep, instead of spending the rest of its budget.

The rule (issue 22 item 3), for a study whose trials are probed for forgetting (gate.forgetting data sets): once
`MIN_AFTER_WARM_STARTS` trials have finished after the warm starts (complete or pruned; discarded repeats and
failures do not count), and no completed trial within every forgetting margin improved the first objective on
the base model's value by more than the noise (`NOISE_SHARE` of the base's value, at least `NOISE_FLOOR`), the
search stops. It then says what to change: when no trial learned at all, the learning rate (or steps); when trials
learned but every one of them forgot beyond a margin, the remedies, sized from the learner that forgot least.

A learner that is only *near* feasible keeps the search going: its probes dropped less than every margin, and the
probe could show a kept skill (its bound misses the margin by less than the drop itself, so a trial that kept the
skill would pass), but the bound on its rows reaches past a margin. It has not been shown to forget, only not yet
shown to keep, and the search around it can find one that is (benchmarks/RESULTS.md, "Issue 23 sixth round": a
study stopped here beside learners 0.007 past a 0.05 margin, on a task where most studies find a pick).
A probe too small to show any kept skill is not that: more trials cannot fix it, so the rule still stops and
asks for more probe rows.

The decision is a pure function of typed trial outcomes and the base model's value (never of the clock, so a
resumed study decides the same way); the Optuna backend's glue (search/optuna_backend/no_learning.py) measures the
base model once (the first time the rule could fire), records the verdict on the study and stops it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpo_action.config import HpoConfig
from hpo_action.config.remedies import forgetting_remedies, number
from hpo_action.search.space import trial_defaults

MIN_AFTER_WARM_STARTS = 4  # trials the sampler chose, after the warm starts, before the rule may stop the search
NOISE_SHARE = 0.02  # an objective within 2 % of the base model's value did not move: evaluation noise, not learning
NOISE_FLOOR = 1e-3  # and never a smaller move than this (a base value of 0, e.g. an accuracy)


@dataclass(frozen=True)
class TrialOutcome:
    """One trial as the rule reads it."""

    number: int
    finished: bool  # complete or pruned
    value: float | None  # the first objective, when complete
    feasible: bool  # within every forgetting margin on its probes
    warm_start: bool
    params: dict[str, Any]
    drops: dict[str, float]  # the probes' drop against the base per set (> 0: worse)
    excess: dict[str, float] = field(default_factory=dict)  # per set: the bound on the drop past its margin (≤ 0: kept)


@dataclass(frozen=True)
class StopDecision:
    """Whether to stop, and the evidence: the learners that forgot (empty when nothing learned at all)."""

    stop: bool
    finished_after_warm: int
    base: float
    threshold: float
    forgot: tuple[TrialOutcome, ...] = ()
    best_feasible: float | None = None


def learned(value: float, base: float, minimize: bool) -> bool:
    """Whether `value` is better than the base model's `base` by more than the noise."""
    gain = (base - value) if minimize else (value - base)
    return gain > noise(base)


def noise(base: float) -> float:
    return max(NOISE_SHARE * abs(base), NOISE_FLOOR)


def near_feasible(trial: TrialOutcome, margins: Mapping[str, float]) -> bool:
    """For an infeasible trial: not shown within the margins, yet not shown to forget (the module's docstring): every
    set either passed or dropped less than its margin on a probe that could show a kept skill (excess − drop < 0: at
    no drop the bound would be within the margin)."""

    def could_pass(name: str) -> bool:
        excess, drop = trial.excess.get(name), trial.drops.get(name)
        if excess is None or drop is None or name not in margins:
            return False
        return excess <= 0 or (drop < margins[name] and excess - drop < 0)

    return bool(trial.excess) and all(could_pass(name) for name in trial.excess)


def decide(trials: Sequence[TrialOutcome], base: float, minimize: bool, margins: Mapping[str, float]) -> StopDecision:
    """The rule above on the study's trials, the base model's value of the first objective and each forgetting
    set's margin."""
    after_warm = sum(t.finished and not t.warm_start for t in trials)
    complete = [t for t in trials if t.value is not None]
    feasible = [t.value for t in complete if t.feasible and t.value is not None]
    best = (min(feasible) if minimize else max(feasible)) if feasible else None
    threshold = noise(base)
    learners = [t for t in complete if t.value is not None and learned(t.value, base, minimize)]
    if after_warm < MIN_AFTER_WARM_STARTS or any(t.feasible or near_feasible(t, margins) for t in learners):
        return StopDecision(False, after_warm, base, threshold, best_feasible=best)
    forgot = tuple(t for t in learners if not t.feasible)
    return StopDecision(True, after_warm, base, threshold, forgot, best)


def stop_message(decision: StopDecision, cfg: HpoConfig) -> str:
    """The stop in words: what the trials showed, and what to change (the run doctor's advice)."""
    metric = cfg.search.objective.metric
    head = (
        f"search stopped after {decision.finished_after_warm} trials past the warm starts: no trial within the "
        f"forgetting margins improved {metric} on the base model's {number(decision.base)} by more than "
        f"{number(decision.threshold)} (search/stopping.py)"
    )
    if not decision.forgot:
        space = cfg.active_space().get("learning_rate")
        highest = max(float(cfg.learning_rate), float(space.high) if space is not None and space.high else 0.0)
        return (
            f"{head}; no trial learned at all. Try: raise the learning-rate range about 10x "
            f"(search.space.learning_rate up to about {number(highest * 10)}) or more steps "
            "(search.budget.max_steps); `hpo-action lr-find` finds where the loss starts to fall"
        )
    least = min(decision.forgot, key=lambda t: max(t.drops.values(), default=0.0))
    sets = [b for b in cfg.gate.forgetting if b.kind == "data"]
    params = {**trial_defaults(cfg), **least.params}
    whose = f"trial {least.number}, the learner that forgot least"
    advice = forgetting_remedies(cfg, params, sets, whose, probe_drops=least.drops)
    drops = ", ".join(f"{name} {drop:+.3g}" for name, drop in least.drops.items())
    return (
        f"{head}; {len(decision.forgot)} trial(s) learned but forgot beyond a margin (trial {least.number}: "
        f"{drops}). Try: {'; '.join(advice)}"
    )
