"""The study's plots as PNG files: they stay in the output folder and the registry, never on a public host."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_plots(study: Any, folder: Path) -> list[Path]:
    """Optimization history, parameter importances and intermediate values as PNGs (none leave the machine)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (
        ("optimization_history.png", views.plot_optimization_history),
        ("param_importances.png", views.plot_param_importances),
        ("intermediate_values.png", views.plot_intermediate_values),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = draw(study)
        except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. too few completed trials for importances
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(7, 4.5)
        figure.tight_layout()
        figure.savefig(folder / name, dpi=90)
        plt.close(figure)
        written.append(folder / name)
    return written
