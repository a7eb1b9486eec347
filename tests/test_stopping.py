"""The search's stopping rule (issue 22 item 3): a search whose trials learned nothing within the forgetting margins
stops after the warm starts plus MIN_AFTER_WARM_STARTS trials, with the advice of what to change."""

from __future__ import annotations

from pathlib import Path

import optuna

from hpo_action.config import parse_config
from hpo_action.search.naming import storage_url, study_name
from hpo_action.search.optuna_backend.no_learning import BASE_ATTR, STOP_ATTR
from hpo_action.search.stopping import (
    MIN_AFTER_WARM_STARTS,
    TrialOutcome,
    decide,
    noise,
    stop_message,
)

from .helpers import small_config

MARGINS = {"copy": 0.05}  # small_config's forgetting set and its margin


def _trial(number: int, value: float | None, feasible: bool = True, warm: bool = False, **kw) -> TrialOutcome:
    return TrialOutcome(
        number=number,
        finished=kw.get("finished", True),
        value=value,
        feasible=feasible and value is not None,
        warm_start=warm,
        params=kw.get("params", {"learning_rate": 1e-3, "lora_r": 8}),
        drops=kw.get("drops", {}),
        excess=kw.get("excess", {}),
    )


def _warm_then(values: list[float | None], feasible: bool = True) -> list[TrialOutcome]:
    warm = [_trial(0, 2.0, warm=True), _trial(1, 2.0, warm=True)]
    return warm + [_trial(i + 2, v, feasible) for i, v in enumerate(values)]


def test_nothing_learned_stops_only_after_the_warm_starts_plus_the_documented_count():
    base = 2.0
    flat = [base - 0.5 * noise(base)] * MIN_AFTER_WARM_STARTS  # moves less than the noise
    early = decide(_warm_then(flat[:-1]), base, minimize=True, margins=MARGINS)
    assert not early.stop and early.finished_after_warm == MIN_AFTER_WARM_STARTS - 1
    late = decide(_warm_then(flat), base, minimize=True, margins=MARGINS)
    assert late.stop and late.forgot == () and late.threshold == noise(base)


def test_one_feasible_learner_keeps_the_search_going_and_an_infeasible_one_does_not():
    base = 2.0
    values = [2.0, 2.0, 2.0, 1.2]  # the last learned (0.8 below the base)
    assert not decide(_warm_then(values), base, minimize=True, margins=MARGINS).stop
    forgot = decide(_warm_then(values, feasible=False), base, minimize=True, margins=MARGINS)
    assert forgot.stop and [t.number for t in forgot.forgot] == [5]


def test_failed_trials_do_not_count_pruned_ones_do_and_maximize_reads_the_other_way():
    failed = [_trial(i, None, finished=False) for i in range(MIN_AFTER_WARM_STARTS)]
    assert not decide(failed, 0.5, minimize=True, margins=MARGINS).stop
    pruned = [_trial(i, None) for i in range(MIN_AFTER_WARM_STARTS)]
    assert decide(pruned, 0.5, minimize=True, margins=MARGINS).stop
    accuracies = [_trial(i, 0.5 + 0.2 * (i == 3)) for i in range(MIN_AFTER_WARM_STARTS)]  # trial 3 rose by 0.2
    assert not decide(accuracies, 0.5, minimize=False, margins=MARGINS).stop
    assert decide(accuracies, 0.5, minimize=True, margins=MARGINS).stop  # the same values are no gain for a loss


def test_the_message_names_what_to_change(tmp_path: Path):
    raw = small_config(tmp_path, search={"forgetting_constraint": True})
    raw["data"]["replay"] = ["replay_copy.jsonl"]
    cfg = parse_config(raw, base_dir=tmp_path)
    nothing = decide(_warm_then([2.0] * MIN_AFTER_WARM_STARTS), 2.0, minimize=True, margins=MARGINS)
    high = cfg.search.space["learning_rate"].high
    text = stop_message(nothing, cfg)
    assert "no trial learned at all" in text and f"search.space.learning_rate up to about {high * 10:.4g}" in text
    learners = [_trial(2, 1.0, False, drops={"copy": 0.4}), _trial(3, 1.1, False, drops={"copy": 0.2})]
    forgot = decide([*learners, *_warm_then([2.0] * 2)], 2.0, minimize=True, margins=MARGINS)
    text = stop_message(forgot, cfg)
    assert "2 trial(s) learned but forgot" in text and "trial 3: copy +0.2" in text
    assert "search.space.replay_ratio" in text and "search.space.kl_to_base" in text  # the doctor's remedies
    assert "more probe rows" not in text  # both dropped beyond the margin (0.05)
    unshowable = _trial(2, 1.0, False, drops={"copy": 0.03}, excess={"copy": 0.04})  # its bound: 0.09 at drop 0.03
    unshown = decide([unshowable, *_warm_then([2.0] * 3)], 2.0, minimize=True, margins=MARGINS)
    assert "Try: more probe rows: search.forgetting_probe_size above" in stop_message(unshown, cfg)


def test_a_learner_near_the_margins_keeps_the_search_going_unless_no_probe_of_that_size_could_show_a_kept_skill():
    """The shape of a real flat-task study (issue 23 calibration): learners that dropped 0.023 on a 0.05 margin
    with a bound 0.007 past it. A trial around them can be shown to keep the skill, so the search goes on; a bound
    past the margin by more than the drop would be past it at no drop at all, and more trials cannot fix that."""
    nothing = _warm_then([2.0] * (MIN_AFTER_WARM_STARTS - 1))
    near = _trial(9, 0.2, False, drops={"copy": 0.023}, excess={"copy": 0.007})
    assert not decide([*nothing, near], 2.0, minimize=True, margins=MARGINS).stop
    unshowable = _trial(9, 0.2, False, drops={"copy": 0.023}, excess={"copy": 0.03})
    beyond = _trial(9, 0.2, False, drops={"copy": 0.06}, excess={"copy": 0.09})
    not_learned = _trial(9, 2.0, False, drops={"copy": 0.023}, excess={"copy": 0.007})  # near, but learned nothing
    for trial in (unshowable, beyond, not_learned):
        assert decide([*nothing, trial], 2.0, minimize=True, margins=MARGINS).stop, trial
    two_sets = {"copy": 0.05, "count": 0.1}
    kept_one = _trial(9, 0.2, False, drops={"copy": -0.02, "count": 0.05}, excess={"copy": -0.01, "count": 0.02})
    assert not decide([*nothing, kept_one], 2.0, minimize=True, margins=two_sets).stop
    assert decide([*nothing, kept_one], 2.0, minimize=True, margins=MARGINS).stop  # "count" has no margin to be near


def test_the_rule_reads_each_trials_probe_bounds_from_the_study(tmp_path: Path):
    """outcomes_of on a real Optuna study: the bound a trial recorded is what makes it near the margins."""
    from hpo_action.search.optuna_backend.finalist import DROP_ATTR, EXCESS_ATTR
    from hpo_action.search.optuna_backend.no_learning import outcomes_of
    from hpo_action.search.space import WARM_START_ATTR

    rate = optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True)

    def study_whose_trial_2_is_past_the_margin_by(excess: float) -> optuna.Study:
        """A warm start then MIN_AFTER_WARM_STARTS learners: trial 2 dropped 0.023, the others forgot (0.6)."""
        study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name=f"past {excess}")
        for number in range(1 + MIN_AFTER_WARM_STARTS):
            drop, past = (0.023, excess) if number == 2 else (0.6, 0.55)
            attrs = {DROP_ATTR: {"copy": drop}, EXCESS_ATTR: {"copy": past}}
            if number == 0:
                attrs[WARM_START_ATTR] = "defaults"
            trial = optuna.trial.create_trial(
                params={"learning_rate": 1e-3}, distributions={"learning_rate": rate}, value=0.2, user_attrs=attrs
            )
            study.add_trial(trial)
        return study

    near = outcomes_of(study_whose_trial_2_is_past_the_margin_by(0.007))
    assert [t.warm_start for t in near] == [True] + [False] * MIN_AFTER_WARM_STARTS
    assert near[2].excess == {"copy": 0.007} and not near[2].feasible
    assert not decide(near, 2.0, minimize=True, margins=MARGINS).stop
    unshowable = outcomes_of(study_whose_trial_2_is_past_the_margin_by(0.03))
    assert decide(unshowable, 2.0, minimize=True, margins=MARGINS).stop


def test_a_real_search_where_nothing_can_learn_stops_with_the_advice(tmp_path: Path, capsys):
    """Real training on the tiny model at a learning rate too low to move anything: the study stops after the
    warm start plus MIN_AFTER_WARM_STARTS trials of its 12, and says to raise the learning rate."""
    from hpo_action.pipeline import search

    raw = small_config(tmp_path, search={"forgetting_constraint": True, "forgetting_probe_size": 32, "n_trials": 12})
    raw["search"]["space"]["learning_rate"] = {"low": 1e-9, "high": 1e-8, "log": True}
    raw["train"]["learning_rate"] = 1e-9
    cfg = parse_config(raw, base_dir=tmp_path)
    summary = search(cfg)
    study = optuna.load_study(study_name=study_name(cfg), storage=storage_url(cfg))
    assert len(summary.trials) == 1 + MIN_AFTER_WARM_STARTS < cfg.search.n_trials
    message = study.user_attrs[STOP_ATTR]
    assert "no trial learned at all" in message and "search.space.learning_rate up to about 1e-07" in message
    assert " ".join(f"warning: {message}".split()) in " ".join(capsys.readouterr().err.split())  # said, not only kept
    base = study.user_attrs[BASE_ATTR]
    assert all(abs(t.value - base) <= noise(base) for t in study.trials if t.value is not None)
    again = search(cfg)  # the same command resumes the stopped study: it stays stopped, nothing more trains
    assert len(again.trials) == len(summary.trials)
