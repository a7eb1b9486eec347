"""Where a study lives: the storage URL, and an Optuna storage opened for it (RDB with heartbeats, or a journal)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo_action.config import HpoConfig, SearchConfig
from hpo_action.errors import ConfigError, OutputError
from hpo_action.files import is_no_space
from hpo_action.redaction import redact_url
from hpo_action.search.naming import storage_url

if TYPE_CHECKING:
    import optuna

SCHEMA_ATTEMPTS = 4


def open_storage(url: str, search: SearchConfig | None = None) -> optuna.storages.BaseStorage:
    """An Optuna RDB storage for URLs, a journal storage for file paths (e.g. runs/study.journal).

    RDB storages get heartbeats (Optuna's own, while a trial runs): a trial whose worker stops beating for the grace
    period is failed by the next worker that looks and, up to `search.retry_interrupted` times, queued again with
    the same parameters."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    search = search or SearchConfig()
    if "://" not in url:
        with _room_in(Path(url).parent):
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(url))
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        with _room_in(folder):
            folder.mkdir(parents=True, exist_ok=True)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=_engine_kwargs(url),
                    heartbeat_interval=search.heartbeat_interval,
                    grace_period=search.grace_period,
                    heartbeat_stale_trial_callback=retry_callback(search),
                )
        except (IntegrityError, ProgrammingError) as err:  # workers creating Optuna's tables at the same time
            attempt += 1
            if attempt == SCHEMA_ATTEMPTS:
                raise ConfigError(f"search.storage: cannot open {redact_url(url)}: {type(err).__name__}") from None
            time.sleep(0.5 * attempt)
        except Exception as err:  # SQLAlchemy raises many types for a bad URL or an unreachable server
            if is_no_space(err) and url.startswith("sqlite:///"):  # SQLITE_FULL: not the URL's fault
                raise _no_space(Path(url.removeprefix("sqlite:///")).parent) from None
            raise ConfigError(f"search.storage: cannot open {redact_url(url)}: {type(err).__name__}") from None


def _no_space(folder: Path) -> OutputError:
    """A full disk is not a config mistake: the same command works once there is room."""
    return OutputError(f"search.storage: no space left on device: {folder}; free space and run the same command again")


@contextmanager
def _room_in(folder: Path) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        if is_no_space(err):
            raise _no_space(folder) from None
        raise


def check_remote_storage(cfg: HpoConfig) -> None:
    """Connect to a database storage now (a local SQLite file or journal always opens)."""
    url = storage_url(cfg)
    if "://" in url and not url.startswith("sqlite"):
        open_storage(url, cfg.search).remove_session()


def retry_callback(search: SearchConfig) -> Any:
    """Queues an interrupted trial again with its parameters; None when retries are off."""
    if search.retry_interrupted == 0:
        return None
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RetryHeartbeatStaleTrialCallback(max_retry=search.retry_interrupted)


def _engine_kwargs(url: str) -> dict[str, Any]:
    # SQLite waits on a busy database instead of failing when several local workers write at once.
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
