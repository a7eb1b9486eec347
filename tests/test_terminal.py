"""The live study view: the bar counts what counts toward search.n_trials, on a real Optuna study."""

from __future__ import annotations

import io

import optuna
from rich.console import Console

from hpo_action.config import SearchConfig
from hpo_action.report.terminal import StudyProgress
from hpo_action.search.optuna_backend.orphans import fail_running
from hpo_action.search.optuna_backend.records import study_view
from hpo_action.search.optuna_backend.slots import finished
from hpo_action.search.optuna_backend.storage import retry_callback


def test_an_interrupted_trial_and_its_retry_count_once_on_the_bar():
    study = optuna.create_study()
    interrupted = study.ask()
    interrupted.suggest_float("x", 0, 1)
    frozen = study.trials[0]
    fail_running(study, frozen, "interrupted: worker host:1 died during this trial", retry_callback(SearchConfig()))
    for _ in range(4):  # the retry (queued with the interrupted trial's parameters), then three more
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", 0, 1))
    assert len(study.trials) == 5 and finished(study) == 4

    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    with StudyProgress(console, total=4, already=0) as progress:
        progress.update(study_view(study, study.trials[-1]))
    shown = console.file.getvalue()
    assert "4/4" in shown and "5/4" not in shown, shown
