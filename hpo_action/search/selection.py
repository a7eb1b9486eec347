"""The finalist rule in words and each objective's value from a trial's measurements, whichever backend runs the
study: single objective, the best trial (the best feasible one under the forgetting constraint); multi-objective,
the best on the first objective among the completed trials whose probes pass the gate's own non-inferiority test
(judge/forgetting_split.py), with the Pareto front shown beside it."""

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
