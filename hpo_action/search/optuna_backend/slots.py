"""Trial slots: how many trials count toward n_trials, and the lock that makes "is a slot of the study free?
then create the trial" atomic across workers.

Without the lock, N workers that each see one missing trial start N trials, and the study ends with more than
n_trials. PostgreSQL serves workers on many machines with an advisory lock; every other storage is shared by
workers of one machine, which take a lock file beside it.
"""

from __future__ import annotations

import fcntl
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import HpoConfig
from hpo_action.errors import TrialError
from hpo_action.search.naming import storage_url, study_name
from hpo_action.search.optuna_backend.duplicates import is_discarded, retry_history

if TYPE_CHECKING:
    import optuna


class TrialSlotLock:
    """A re-acquirable cross-process lock named after the study; `close()` releases its resources."""

    def __init__(self, storage_url: str, study_name: str, lock_dir: Path) -> None:
        digest = hashlib.sha256(study_name.encode()).digest()  # any study name, even one with a "/", is safe
        self._key = int.from_bytes(digest[:8], "big", signed=True)
        self._connection: Any = None
        self._file: Any = None
        self.held = False
        if storage_url.startswith("postgresql"):
            import sqlalchemy

            engine = sqlalchemy.create_engine(storage_url, poolclass=sqlalchemy.pool.NullPool)
            self._connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        else:
            lock_dir.mkdir(parents=True, exist_ok=True)
            self._file = (lock_dir / f".hpo-slots-{digest.hex()[:16]}.lock").open("a+")

    def acquire(self) -> None:
        if self._connection is not None:
            from sqlalchemy import text

            self._connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
        else:
            fcntl.flock(self._file, fcntl.LOCK_EX)
        self.held = True

    def release(self) -> None:
        """Release if held: a trial releases the slot lock as soon as it exists, and the loop again when the
        trial never started (both may run)."""
        if not self.held:
            return
        self.held = False
        if self._connection is not None:
            from sqlalchemy import text

            self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
        else:
            fcntl.flock(self._file, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        if self._file is not None:
            self._file.close()


def slot_lock(cfg: HpoConfig) -> TrialSlotLock:
    url = storage_url(cfg)
    local = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") or "://" not in url else None
    return TrialSlotLock(url, study_name(cfg), local.parent if local else Path(cfg.output.dir))


def retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of interrupted trials that a retry stands in for: they do not count toward n_trials."""
    return {number for t in trials for number in retry_history(t)}


def finished(study: optuna.Study) -> int:
    """Trials that count toward n_trials: complete, pruned or failed, each retried trial once, no discarded
    repeat (search/optuna_backend/duplicates.py)."""
    trials = study.get_trials(deepcopy=False)
    superseded = retried(trials)
    return sum(1 for t in trials if t.state.is_finished() and t.number not in superseded and not is_discarded(t))


def claimed(study: optuna.Study) -> int:
    """Finished trials plus the ones running now: a worker starts a trial only while this is below target."""
    import optuna

    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return finished(study) + len(running)


def target_trials(study: optuna.Study, cfg: HpoConfig, extra_trials: int | None) -> int:
    """How many counted trials the study should hold when this command ends."""
    return finished(study) + extra_trials if extra_trials is not None else cfg.search.n_trials


def check_complete(study: optuna.Study, cfg: HpoConfig) -> None:
    """The leader (`run --skip-search`) gates the study's best only when the study is done: every counted trial
    finished and no queued retry waiting; otherwise a TrialError (exit 1) with the counts."""
    import optuna

    done = finished(study)
    waiting = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
    running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
    if done < cfg.search.n_trials or waiting or running:
        raise TrialError(
            f"the study is not complete: {done} of {cfg.search.n_trials} trials finished, {running} running, "
            f"{waiting} waiting to be retried; let the workers finish, or pass --allow-partial to gate it as it is"
        )


def timeout_stop(done: int, target: int, deadline: float | None) -> str | None:
    """The sentence a run prints, stores and publishes when search.timeout ended the study short of its target."""
    if deadline is None or done >= target or time.time() < deadline:
        return None
    return f"stopped by timeout after {done} of {target} trials; the same command continues"
