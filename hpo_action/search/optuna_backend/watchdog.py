"""search.trial_timeout's hard stop for trials run in this process (`--workers 0`).

A trial past its limit is stopped at the next step boundary by the trial itself (train/trial.py), and fails while
the study goes on. A trial stuck inside one step never reaches that check. With worker processes the supervisor
kills the stuck worker and starts a fresh one; in this process nothing can interrupt a step safely (an exception
injected into whatever runs may land in the middle of the trainer, the storage or a lock). So past the hard limit
this thread records the trial FAIL with the cause, says in one line what happened and how to go on, and ends the
process (exit 1): the study's storage stays consistent and the same command resumes it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING

from hpo_action.search.optuna_backend.orphans import fail_running

if TYPE_CHECKING:
    import optuna

GRACE_SECONDS = 60.0  # past 1.5 × trial_timeout: room for one slow step, an evaluation or the probes
POLL_SECONDS = 1.0
EXIT_CODE = 1  # a runtime failure, as the CLI's other errors of a run


def hard_limit(timeout: float) -> float:
    """Seconds after its start at which a trial still running is stopped from outside: 1.5 × limit + 60 s."""
    return 1.5 * timeout + GRACE_SECONDS


class TrialWatchdog:
    """A daemon thread that ends this process when the trial it was armed for runs past the hard limit."""

    def __init__(self, study: optuna.Study, timeout: float) -> None:
        self.study, self.timeout, self.limit = study, timeout, hard_limit(timeout)
        self._armed: tuple[int, float] | None = None  # (trial number, time.monotonic() at its start)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hpo-action-trial-watchdog", daemon=True)
        self._thread.start()

    def arm(self, number: int) -> None:
        self._armed = (number, time.monotonic())

    def disarm(self) -> None:
        self._armed = None

    def close(self) -> None:
        self._closed.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._closed.wait(POLL_SECONDS):
            armed = self._armed
            if armed is not None and time.monotonic() - armed[1] > self.limit:
                self._stop_process(armed[0], time.monotonic() - armed[1])

    def _stop_process(self, number: int, elapsed: float) -> None:
        import optuna

        cause = (
            f"trial timeout: still inside one step after {elapsed:.0f} s (search.trial_timeout {self.timeout:g} s); "
            "stopped with its process (search.workers 0)"
        )
        running = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        for trial in running:
            if trial.number == number:
                fail_running(self.study, trial, cause)
        print(
            f"error: search.trial_timeout: trial {number} is still inside one step after {elapsed:.0f} s (limit "
            f"{self.timeout:g} s), where nothing in this process can stop it; it is recorded FAIL and the search "
            "stops. Run the same command again to go on, or use search.workers 1 or more (--workers 1), where a "
            "stuck trial's worker is replaced and the study goes on",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_CODE)
