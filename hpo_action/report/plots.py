"""The study's plots as PNG files: they stay in the output folder and the registry, never on a public host."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hpo_action.search.finalist import first_value
from hpo_action.search.pruning import companion_study


def write_plots(study: Any, folder: Path, names: tuple[str, ...] = ()) -> list[Path]:
    """Optimization history, parameter importances and intermediate values as PNGs (none leave the machine); a
    multi-objective study adds its Pareto front, and the first two plots follow its first objective. `names` are
    the objectives' metric names."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in _views(study, names).items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. too few completed trials for importances
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(7, 4.5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=90)
        plt.close(figure)
        written.append(folder / name)
    return written


def _views(study: Any, names: tuple[str, ...]) -> dict[str, Callable[[], Any]]:
    from optuna.visualization import matplotlib as views

    if len(study.directions) == 1:
        return {
            "optimization_history.png": lambda: views.plot_optimization_history(study),
            "param_importances.png": lambda: views.plot_param_importances(study),
            "intermediate_values.png": lambda: views.plot_intermediate_values(study),
        }
    first = {"target": first_value, "target_name": names[0] if names else "objective 0"}
    pruned_on = companion_study(study)  # the first objective's curves live in the pruner's companion study
    labels = list(names) if len(names) == len(study.directions) else None
    return {
        "optimization_history.png": lambda: views.plot_optimization_history(study, **first),
        "param_importances.png": lambda: views.plot_param_importances(study, **first),
        "intermediate_values.png": lambda: views.plot_intermediate_values(pruned_on or study),
        "pareto_front.png": lambda: views.plot_pareto_front(study, target_names=labels),
    }
