"""Which trial the study hands to the gate, by one explicit rule, and the Pareto front of a multi-objective study.

Single objective: Optuna's best trial (the best feasible one under the forgetting constraint). Multi-objective:
the best trial on the first objective among the completed trials whose probes pass the gate's own non-inferiority
test (judge/forgetting_split.py); the Pareto front is shown beside it so the trade-off is visible, but the rule, not
a person, picks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

    from hpo_action.config import HpoConfig
    from hpo_action.search.reseed_finalists import Candidate

EXCESS_ATTR = "forgetting_excess"  # per set: the gate's lower bound on the probe rows below −margin (≤ 0: passed)
DROP_ATTR = "forgetting_drop"  # per set: the probe's drop against the base model (> 0: worse)
SHORTFALL_ATTR = "forgetting_shortfall"  # the worst set's excess over its margin, in margins (≤ 0: feasible)


def within_margins(trial: optuna.trial.FrozenTrial) -> bool:
    """Every forgetting probe of the trial stayed within its margin (true when no probe ran)."""
    return all(excess <= 0 for excess in trial.user_attrs.get(EXCESS_ATTR, {}).values())


def feasible_count(study: optuna.Study) -> int | None:
    """Completed trials within every margin on the probes; None when no probe ran after any of them."""
    import optuna

    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    probed = [t for t in completed if EXCESS_ATTR in t.user_attrs]
    return sum(within_margins(t) for t in probed) if probed else None


def first_value(trial: optuna.trial.FrozenTrial) -> float | None:
    """The trial's value on the first objective (its only one in a single-objective study)."""
    return trial.values[0] if trial.values else None


def chosen_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The finalist by the rule above; None when no trial qualifies."""
    import optuna

    if len(study.directions) == 1:
        try:
            return study.best_trial
        except ValueError:
            return None
    done = [
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if within_margins(t)
    ]
    if not done:
        return None
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1.0
    return min(done, key=lambda t: (sign * t.values[0], t.number))


def closest_to_feasible(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """When no trial qualifies, the completed probed trial with the smallest shortfall (the earliest on a tie): the
    one the gate judges, so that a search whose trials all forget ends in a gate decision with its evidence."""
    import optuna

    if chosen_trial(study) is not None:
        return None
    probed = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if SHORTFALL_ATTR in t.user_attrs
    ]
    return min(probed, key=lambda t: (t.user_attrs[SHORTFALL_ATTR], t.number), default=None)


def judged_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The trial the gate judges: the finalist, or else the closest to feasible."""
    return chosen_trial(study) or closest_to_feasible(study)


def beats_finalist(study: optuna.Study, value: float) -> bool:
    """Whether a qualifying trial with this first-objective value would become the finalist."""
    import optuna

    finalist = chosen_trial(study)
    if finalist is None:
        return True
    best = first_value(finalist)
    assert best is not None
    return value < best if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else value > best


def pareto_front(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The non-dominated completed trials of a multi-objective study (empty for a single objective)."""
    if len(study.directions) == 1:
        return []
    return sorted(study.best_trials, key=lambda t: t.number)


def finalist_candidates(study: optuna.Study, cfg: HpoConfig, top_k: int) -> list[Candidate]:
    """search.finalists: the top-k completed trials within every forgetting margin, best first, with every trial
    parameter (the train defaults, the searched ones, a batch override) and what their search run measured."""
    import optuna

    from hpo_action.search.reseed_finalists import Candidate
    from hpo_action.search.space import trial_defaults

    done = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if within_margins(t) and t.value is not None
    ]
    sign = 1.0 if cfg.search.objective.direction == "minimize" else -1.0
    ranked = sorted(done, key=lambda t: (sign * t.value, t.number))[:top_k]
    defaults = trial_defaults(cfg)
    return [
        Candidate(
            t.number,
            {**defaults, **t.params, **t.user_attrs.get("batch_override", {})},
            float(t.value),
            metrics=t.user_attrs.get("metrics", {}),
            forgetting_excess=t.user_attrs.get(EXCESS_ATTR, {}),
            forgetting_drop=t.user_attrs.get(DROP_ATTR, {}),
        )
        for t in ranked
    ]
