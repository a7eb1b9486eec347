"""The trial-slot lock: 'is a slot of the study free? then create the trial' is atomic across workers.

Without it, N workers that each see one missing trial start N trials, and the study ends with more than
n_trials. PostgreSQL serves workers on many machines with an advisory lock; every other storage is shared by
workers of one machine, which take a lock file beside it.
"""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path
from types import TracebackType
from typing import Any


class TrialSlotLock:
    """A re-acquirable cross-process lock named after the study; `close()` releases its resources."""

    def __init__(self, storage_url: str, study_name: str, lock_dir: Path) -> None:
        digest = hashlib.sha256(study_name.encode()).digest()  # any study name, even one with a "/", is safe
        self._key = int.from_bytes(digest[:8], "big", signed=True)
        self._connection: Any = None
        self._file: Any = None
        if storage_url.startswith("postgresql"):
            import sqlalchemy

            engine = sqlalchemy.create_engine(storage_url, poolclass=sqlalchemy.pool.NullPool)
            self._connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        else:
            lock_dir.mkdir(parents=True, exist_ok=True)
            self._file = (lock_dir / f".hpo-slots-{digest.hex()[:16]}.lock").open("a+")

    def __enter__(self) -> TrialSlotLock:
        if self._connection is not None:
            from sqlalchemy import text

            self._connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
        else:
            fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None):
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
