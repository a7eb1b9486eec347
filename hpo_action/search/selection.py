"""The finalist rule in words and each objective's value from a trial's measurements, whichever backend runs the
study: single objective, the best trial (the best feasible one under the forgetting constraint); multi-objective,
the best on the first objective among the completed trials whose probes pass the gate's own non-inferiority test
(judge/forgetting_split.py), with the Pareto front shown beside it. When no completed trial qualifies, the one closest
to qualifying is judged (fallback_note), so that the gate, not a missing finalist, ends the run."""

from __future__ import annotations

from hpo_action.config import HpoConfig, is_forgetting_objective
from hpo_action.errors import TrialError


def selection_rule(cfg: HpoConfig) -> str:
    """The rule in words, as summary.json records it."""
    first = cfg.search.objective
    best = f"the best {first.metric} ({first.direction})"
    if cfg.search.multi_objective:
        return f"{best} among completed trials whose forgetting on every probe set is within its margin"
    if cfg.search.forgetting_constraint and cfg.gate.forgetting:
        return f"{best} among feasible trials (forgetting within every margin: search.forgetting_constraint)"
    return f"{best} among completed trials"


def objective_values(cfg: HpoConfig, metrics: dict[str, float], drops: dict[str, float]) -> list[float]:
    """The trial's value on each objective: a trainer metric from its last evaluation, or a forgetting drop."""
    values = []
    for objective in cfg.search.objectives or [cfg.search.objective]:
        if is_forgetting_objective(objective.metric):
            name = objective.metric.partition(":")[2]
            if (name and name not in drops) or not drops:
                raise TrialError(
                    f"search.objectives: {objective.metric!r} needs the forgetting probes' result, and no probe of "
                    f"{name or 'any gate.forgetting set'} ran after this trial"
                )
            values.append(drops[name] if name else max(drops.values()))
        else:
            values.append(metrics[objective.metric])
    return values


def shortfall(excess: dict[str, float], margins: dict[str, float]) -> float:
    """How far a trial's worst probe missed the gate's test, in units of its set's margin (a set without a margin:
    in its metric's units); ≤ 0 when every probe passed. Sets with different margins compare on one scale."""
    return max((value / margins[name] if margins.get(name) else value for name, value in excess.items()), default=0.0)


def fallback_note(number: int, missed_by: float) -> str:
    """Why the gate judges a trial that was not feasible at search, as the summary, report and gate.json say it."""
    return (
        "no trial was feasible at search (every probed trial forgot a gate.forgetting set beyond the gate's test); "
        f"trial #{number}, the closest to feasible (its worst probe missed by {missed_by:.3g} of its margin), "
        "was judged"
    )
