"""The one door to Optuna's internals. Everything else in hpo-action uses Optuna's public API only.

Each function here says why the public API does not serve. Pinned to optuna>=5,<6 in pyproject.toml; a test
greps the package for private attributes outside this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna


def annotate_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, key: str, value: Any) -> None:
    """Set a user attribute on a trial this process did not create, e.g. the cause on a dead worker's trial.

    The public `Trial.set_user_attr` needs the live `Trial` object of the process that asked for the trial, and
    `Study.tell(number, ...)` (public) can finish such a trial but cannot annotate it. The storage's own method,
    keyed by the trial's storage id, is the only way.
    """
    study._storage.set_trial_user_attr(trial._trial_id, key, value)


def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage object a study lives in, to open its companion study (search/optuna_backend/pruning.py) beside it.

    `Study` has no public accessor for its storage, and reopening the storage from its URL would not reach the same
    database for an in-memory storage, nor share the heartbeat and retry settings the study was opened with.
    """
    return study._storage
