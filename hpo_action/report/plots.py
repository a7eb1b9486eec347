"""The study's plots as PNG files, drawn from the typed trial records whichever backend ran the study: they stay in
the output folder and the registry, never on a public host."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hpo_action.search.summary import RunSummary, TrialRecord

COMPLETE = "COMPLETE"


def write_plots(summary: RunSummary, folder: Path, importances: Mapping[str, float] | None = None) -> list[Path]:
    """Optimization history, parameter importances (when the backend measured them) and intermediate values as
    PNGs (none leave the machine); a multi-objective study adds its Pareto front, and the first two plots follow
    its first objective."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in _views(summary, dict(importances or {})).items():
        figure, axes = plt.subplots()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                drawn = draw(axes)
        except (ValueError, RuntimeError, ZeroDivisionError):
            drawn = False
        if drawn:
            figure.set_size_inches(7, 4.5)
            figure.tight_layout()
            figure.savefig(folder / name, dpi=90)
            written.append(folder / name)
        plt.close(figure)
    return written


def _views(summary: RunSummary, importances: dict[str, float]) -> dict[str, Callable[[Any], bool]]:
    first = summary.selection.objectives[0]["metric"] if summary.selection else summary.objective_metric
    views: dict[str, Callable[[Any], bool]] = {
        "optimization_history.png": lambda axes: _history(axes, summary, first),
        "param_importances.png": lambda axes: _importances(axes, importances, first),
        "intermediate_values.png": lambda axes: _curves(axes, summary.trials, first),
    }
    if summary.multi_objective:
        views["pareto_front.png"] = lambda axes: _pareto(axes, summary)
    return views


def _history(axes: Any, summary: RunSummary, metric: str) -> bool:
    """Each completed trial's first-objective value and the best so far."""
    done = [t for t in summary.trials if t.state == COMPLETE and t.value is not None]
    if not done:
        return False
    pick = min if summary.objective_direction == "minimize" else max
    best, running = [], None
    for trial in done:
        running = trial.value if running is None else pick(running, trial.value)
        best.append(running)
    axes.scatter([t.number for t in done], [t.value for t in done], s=18, label=metric)
    axes.plot([t.number for t in done], best, color="tab:red", label="best value")
    axes.set(title="Optimization history", xlabel="trial", ylabel=metric)
    axes.legend()
    return True


def _importances(axes: Any, importances: dict[str, float], metric: str) -> bool:
    """The parameters' importances for the first objective, largest on top."""
    if not importances:
        return False
    ordered = sorted(importances.items(), key=lambda item: item[1])
    axes.barh([name for name, _ in ordered], [value for _, value in ordered])
    axes.set(title="Hyperparameter importances", xlabel=f"importance for {metric}")
    return True


def _curves(axes: Any, trials: tuple[TrialRecord, ...], metric: str) -> bool:
    """Every trial's first-objective curve at its evaluations (a pruned trial's ends where it stopped)."""
    drawn = [t for t in trials if t.curve]
    for trial in drawn:
        axes.plot([p[0] for p in trial.curve], [p[1] for p in trial.curve], marker=".", alpha=0.7)
    axes.set(title="Intermediate values", xlabel="step", ylabel=metric)
    return bool(drawn)


def _pareto(axes: Any, summary: RunSummary) -> bool:
    """The completed trials on the first two objectives, the Pareto front marked."""
    assert summary.selection is not None
    names = [entry["metric"] for entry in summary.selection.objectives]
    done = [t for t in summary.trials if t.state == COMPLETE and len(t.values) >= 2]
    if not done:
        return False
    front = set(summary.selection.pareto_front)
    for on_front, label, color in ((False, "trial", "tab:blue"), (True, "Pareto front", "tab:red")):
        shown = [t for t in done if (t.number in front) == on_front]
        axes.scatter([t.values[0] for t in shown], [t.values[1] for t in shown], color=color, label=label, s=20)
    axes.set(title="Pareto front", xlabel=names[0], ylabel=names[1])
    axes.legend()
    return True
