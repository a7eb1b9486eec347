"""Live terminal view of a running study and the closing tables; rich renders, the study is the model."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpo_action.search.duplicates import is_discarded
from hpo_action.search.finalist import chosen_trial, first_value
from hpo_action.search.slots import finished

if TYPE_CHECKING:
    import optuna


def make_console(stderr: bool = False) -> Console:
    """A console; CI logs (not a terminal) get 120 columns instead of rich's 80 so tables stay readable."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 120)


class StudyProgress:
    """Trial x/N, counts by state, best so far and elapsed time, updated after each trial."""

    def __init__(self, console: Console, total: int, already: int) -> None:
        self.console, self.started = console, time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]trials"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("", total=max(total, already), completed=already)

    def __enter__(self) -> StudyProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def update(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        counts: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            if is_discarded(t):  # a repeated proposal, asked again: no trial
                continue
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
        done = finished(study)  # an interrupted trial and its retry count once, as toward search.n_trials
        states = " ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        finalist = chosen_trial(study)
        best = "best -" if finalist is None else f"best {first_value(finalist):.4g} (#{finalist.number})"
        self._progress.update(self._task, completed=done, description=f"{states} · {best}")
        if not self.console.is_terminal:  # CI logs get one line per trial instead of a live bar
            value = "-" if trial.values is None else "/".join(f"{v:.4g}" for v in trial.values)
            elapsed = time.monotonic() - self.started
            line = f"trial {trial.number} {trial.state.name.lower()} {value}"
            self.console.print(f"{line} · {states} · {best} · {elapsed:.0f}s")
        if trial.state.name == "FAIL":
            self.console.print(f"[red]trial {trial.number} failed:[/red] {trial.user_attrs.get('error', '?')}")
