"""The learning-rate range test as a picture: the raw and smoothed loss against the learning rate (log scale),
the suggestion, the loss minimum and the window `search.lr_bounds: auto` would search."""

from __future__ import annotations

from pathlib import Path

from hpo_action.train.lr_find import LrFindResult


def write_lr_find_plot(result: LrFindResult, window: tuple[float, float] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    axes.plot(result.learning_rates, result.losses, color="0.75", lw=1, label="training loss")
    axes.plot(result.learning_rates, result.smoothed, color="C0", lw=2, label="smoothed")
    axes.axvline(result.suggestion, color="C2", linestyle="--", label=f"suggestion {result.suggestion:.3g}")
    axes.axvline(result.minimum, color="C3", linestyle=":", label=f"loss minimum {result.minimum:.3g}")
    if window is not None:
        axes.axvspan(*window, color="C2", alpha=0.1, label=f"lr_bounds: auto → {window[0]:.2g} … {window[1]:.2g}")
    axes.set_xscale("log")
    top = max([*result.smoothed[: max(len(result.smoothed) // 10, 1)], min(result.smoothed) * 1.5])
    axes.set_ylim(min(result.smoothed) * 0.9, top * 1.1)
    axes.set_xlabel("learning rate")
    axes.set_ylabel("training loss")
    axes.set_title("learning-rate range test")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
