"""Live terminal view of a running study and the closing tables; rich renders, the study is the model."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

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
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
        done = sum(v for k, v in counts.items() if k in ("complete", "pruned", "fail"))
        states = " ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        try:
            best = f"best {study.best_value:.4g} (#{study.best_trial.number})"
        except ValueError:
            best = "best -"
        self._progress.update(self._task, completed=done, description=f"{states} · {best}")
        if not self.console.is_terminal:  # CI logs get one line per trial instead of a live bar
            value = "-" if trial.value is None else f"{trial.value:.4g}"
            elapsed = time.monotonic() - self.started
            line = f"trial {trial.number} {trial.state.name.lower()} {value}"
            self.console.print(f"{line} · {states} · {best} · {elapsed:.0f}s")
        if trial.state.name == "FAIL":
            self.console.print(f"[red]trial {trial.number} failed:[/red] {trial.user_attrs.get('error', '?')}")


def trials_table(rows: list[dict[str, Any]], metric: str) -> Table:
    table = Table(title="trials", show_lines=False)
    params = sorted({k for row in rows for k in row if k.startswith("param_")})
    for column in ("#", "state", metric, "steps", "s", *(p.removeprefix("param_") for p in params)):
        table.add_column(column, justify="right" if column not in ("state",) else "left")
    for row in rows:
        table.add_row(
            str(row["number"]),
            row["state"].lower(),
            _fmt(row["value"]),
            _fmt(row["steps"]),
            _fmt(row["seconds"]),
            *(_fmt(row.get(p)) for p in params),
        )
    return table


def best_table(best: dict[str, Any], metric: str) -> Table:
    table = Table(title=f"best trial #{best['number']}: {metric} = {_fmt(best['value'])}")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    for name, value in sorted(best["params"].items()):
        table.add_row(name, _fmt(value))
    return table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
