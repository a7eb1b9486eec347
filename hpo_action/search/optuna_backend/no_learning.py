"""The stopping rule of search/stopping.py on an Optuna study: a study callback that applies it after each trial,
measures the base model once (the first time the rule could fire), records the verdict on the study (so a resumed
run of the same config stops again) and calls `study.stop()`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpo_action.config import HpoConfig
from hpo_action.search.space import trial_defaults
from hpo_action.search.stopping import MIN_AFTER_WARM_STARTS, TrialOutcome, decide, stop_message

if TYPE_CHECKING:
    import optuna

    from hpo_action.train.runner import Runner

STOP_ATTR = "stopped_no_learning"  # study user attribute: the stop's message, once the rule fired
BASE_ATTR = "base_objective"  # study user attribute: the base model's value of the first objective


def stopped(study: optuna.Study) -> str | None:
    """The stop's message when the rule stopped this study (a resumed run of the same config stops again)."""
    message = study.user_attrs.get(STOP_ATTR)
    return str(message) if message else None


class NoLearningStop:
    """An Optuna study callback: after each trial, applies the rule and stops the study when it fires."""

    def __init__(self, cfg: HpoConfig, runner: Runner) -> None:
        self.cfg, self.runner = cfg, runner
        probed = cfg.search.forgetting_constraint or cfg.search.multi_objective
        # A stand-in runner that cannot measure the base model (a table replay without its recorded base value)
        # leaves the rule off.
        self.applies = probed and any(b.kind == "data" for b in cfg.gate.forgetting) and hasattr(runner, "base_metrics")
        self.margins = cfg.gate.margins()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not self.applies or stopped(study):
            return
        outcomes = outcomes_of(study)
        if sum(t.finished and not t.warm_start for t in outcomes) < MIN_AFTER_WARM_STARTS:
            return  # before the rule may fire: the base model is not measured yet
        minimize = self.cfg.search.objective.direction == "minimize"
        try:
            base = self._base(study)
        except Exception as err:  # the rule is advice: a base model that cannot be measured must not end the search
            self.applies = False
            _warn(f"the stopping rule is off: the base model's {self.cfg.search.objective.metric} failed ({err})")
            return
        decision = decide(outcomes, base, minimize, self.margins)
        if decision.stop:
            message = stop_message(decision, self.cfg)
            study.set_user_attr(STOP_ATTR, message)
            study.stop()  # the caller says so once the study ends (a worker's stderr is only its log)

    def _base(self, study: optuna.Study) -> float:
        """The base model's value of the first objective: measured once, then kept on the study."""
        if BASE_ATTR not in study.user_attrs:
            metrics = self.runner.base_metrics(base_params(self.cfg))
            study.set_user_attr(BASE_ATTR, float(metrics[self.cfg.search.objective.metric]))
        return float(study.user_attrs[BASE_ATTR])


def base_params(cfg: HpoConfig) -> dict[str, Any]:
    """The parameters the base model is evaluated with: the train defaults without the remedies (the base trains
    nothing, so only its evaluation settings matter)."""
    return {**trial_defaults(cfg), "replay_ratio": 0.0, "kl_to_base": 0.0}


def outcomes_of(study: optuna.Study) -> list[TrialOutcome]:
    """The study's trials as the rule reads them (discarded repeats and running trials left out)."""
    import optuna

    from hpo_action.search.optuna_backend.duplicates import is_discarded
    from hpo_action.search.optuna_backend.finalist import DROP_ATTR, EXCESS_ATTR, first_value, within_margins
    from hpo_action.search.space import warm_start_kind

    states = optuna.trial.TrialState
    outcomes = []
    for t in study.get_trials(deepcopy=False, states=(states.COMPLETE, states.PRUNED, states.FAIL)):
        if is_discarded(t):
            continue
        complete = t.state == states.COMPLETE
        outcomes.append(
            TrialOutcome(
                number=t.number,
                finished=t.state != states.FAIL,
                value=first_value(t) if complete else None,
                feasible=complete and within_margins(t),
                warm_start=bool(warm_start_kind(t.user_attrs)),
                params=dict(t.params),
                drops=dict(t.user_attrs.get(DROP_ATTR, {})),
                excess=dict(t.user_attrs.get(EXCESS_ATTR, {})),
            )
        )
    return outcomes


def _warn(message: str) -> None:
    from hpo_action.notices import say

    say(f"warning: {message}")
