"""Trials whose process died: failed with their cause (and retried once when the death was an interruption).

RDB storages find silent trials by their heartbeat (Optuna's `fail_stale_trials`). On one machine a restart need
not wait out the grace period: a RUNNING trial records which process runs it, and a process that is gone is gone.
"""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

from hpo_action.search.optuna_backend.optuna_compat import annotate_trial

if TYPE_CHECKING:
    import optuna

WORKER_ATTR = "worker"  # user attribute: host:pid of the process running the trial


def worker_id(pid: int | None = None) -> str:
    """Who runs a trial: stored on it, so a restart on this host can tell whether that process is gone."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def fail_orphans(study: optuna.Study, retry: Callable[..., None] | None = None) -> list[int]:
    """Fail (and retry) the RUNNING trials of processes on this host that are gone (killed, crashed), so a
    restart on the same machine does not wait out the heartbeat grace period; returns their numbers."""
    import optuna

    host = socket.gethostname()
    orphans = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner_host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        if owner_host != host or not pid.isdigit():
            continue
        if int(pid) != os.getpid() and _alive(int(pid)):  # our own pid here is a reused one: we run no trial yet
            continue
        fail_running(study, trial, f"interrupted: worker {owner_host}:{pid} died during this trial", retry)
        orphans.append(trial.number)
    return orphans


def fail_worker_trials(
    study: optuna.Study, pid: int, cause: str, retry: Callable[..., None] | None = None
) -> list[int]:
    """Fail the trial a dead worker process was running, with the cause; not retried unless `retry` is given
    (search.resume_trials: the retry resumes from its checkpoint), since a trial that crashes its process (OOM
    escalation, segfault) would likely crash the next one too."""
    import optuna

    mine = worker_id(pid)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    crashed = [t for t in running if t.user_attrs.get(WORKER_ATTR) == mine]
    for trial in crashed:
        fail_running(study, trial, cause, retry)
    return [t.number for t in crashed]


def fail_running(
    study: optuna.Study, trial: optuna.trial.FrozenTrial, error: str, retry: Callable[..., None] | None = None
) -> None:
    """Fail another process's RUNNING trial with `error` and optionally queue a retry of it. `trial` is the
    snapshot taken while it ran, so the retry does not inherit the error."""
    import optuna

    try:
        annotate_trial(study, trial, "error", error)
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        return  # another process finished it first (and retried it, if it should be)
    except RuntimeError:
        pass  # a grid sampler asks to stop outside an optimize loop; the FAIL is stored all the same
    if retry is not None:
        retry(study, trial)


def fail_stale(study: optuna.Study) -> None:
    """Fail (and retry) trials whose heartbeat stopped: their worker died on some machine."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True
