"""No silent minutes: a line before anything slow, and progress while it runs.

Everything goes to stderr (stdout stays for results). In a terminal a progress bar moves; in a CI log, where a bar
cannot move, a line is printed at least every `EVERY_SECONDS` and every tenth of the work. Any stage may use this:
it is plain output, not a report.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

EVERY_SECONDS = 10.0


def say(message: str) -> None:
    """One line on stderr, at once; in a terminal, folded to its width (a long path must not run off the edge)."""
    if sys.stderr.isatty():
        message = textwrap.fill(message, width=_stderr_columns(), subsequent_indent="  ", break_on_hyphens=False)
    print(message, file=sys.stderr, flush=True)


def _stderr_columns() -> int:
    """The width of the terminal stderr writes to (stdout may be a pipe); COLUMNS wins, as everywhere."""
    try:
        measured = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        measured = shutil.get_terminal_size().columns
    columns = os.environ.get("COLUMNS", "")
    return max(int(columns) if columns.isdigit() else measured, 20)


class Advance(Protocol):
    def __call__(self, done: int = 1) -> None: ...


@contextmanager
def progress(label: str, total: int, unit: str = "") -> Iterator[Advance]:
    """Announce `label`, then show progress over `total` units of work; yields `advance(n)`."""
    if sys.stderr.isatty():
        yield from _bar(label, total, unit)
        return
    say(f"{label}: 0/{total}{unit}")
    state = {"done": 0, "printed": 0, "at": time.monotonic()}

    def advance(done: int = 1) -> None:
        state["done"] += done
        now = time.monotonic()
        tenth = state["done"] * 10 // max(total, 1) > state["printed"] * 10 // max(total, 1)
        if tenth or now - state["at"] >= EVERY_SECONDS or state["done"] >= total:
            say(f"{label}: {min(state['done'], total)}/{total}{unit}")
            state["printed"], state["at"] = state["done"], now

    yield advance


def _bar(label: str, total: int, unit: str) -> Iterator[Advance]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(unit), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total)

        def advance(done: int = 1) -> None:
            bar.advance(task, done)

        yield advance
