"""Live terminal view of a running study and the closing tables and plots; rich renders, the backend's typed
records (StudyView while it runs, then the SearchResult) are the model."""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hpo_action.layout import RunLayout
from hpo_action.report.plots import write_plots
from hpo_action.report.tables import (
    best_table,
    checkpoint_line,
    pareto_table,
    to_rich,
    tradeoff_line,
    trials_table,
    warm_start_line,
)
from hpo_action.search.backend import SearchResult, StudyView


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

    def update(self, view: StudyView) -> None:
        trial = view.trial
        states = " ".join(f"{k} {v}" for k, v in sorted(view.counts.items()))
        best = "best -" if view.best_number is None else f"best {view.best_value:.4g} (#{view.best_number})"
        # an interrupted trial and its retry count once, as toward search.n_trials
        self._progress.update(self._task, completed=view.finished, description=f"{states} · {best}")
        if not self.console.is_terminal:  # CI logs get one line per trial instead of a live bar
            value = "/".join(f"{v:.4g}" for v in view.values) or "-"
            elapsed = time.monotonic() - self.started
            line = f"trial {trial.number} {trial.state.lower()} {value}"
            self.console.print(f"{line} · {states} · {best} · {elapsed:.0f}s")
        if trial.state == "FAIL":
            self.console.print(f"[red]trial {trial.number} failed:[/red] {trial.error or '?'}")


def show_search(result: SearchResult, layout: RunLayout, console: Console) -> None:
    """The plots of the study (plots/) and its closing tables: trials, Pareto front, best trial, the lines under
    them, and why it stopped short when it did."""
    summary = result.summary
    console.print(f"writing plots to {layout.plots_dir}")
    write_plots(summary, layout.plots_dir, result.importances)
    console.print(to_rich(trials_table(summary, errors=False)))
    for table in (pareto_table(summary), best_table(summary)):
        if table is not None:
            console.print(to_rich(table))
    for line in (warm_start_line(summary), tradeoff_line(summary), checkpoint_line(summary)):
        if line:
            console.print(line)
    console.print(f"outputs in {layout.root}")
    if summary.stopped_early:
        console.print(f"[yellow]{summary.stopped_early}[/yellow]")
