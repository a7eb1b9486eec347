"""The plot of RESULTS.md: median true regret against training steps spent, with bootstrap 95% bands."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def plot(per_task: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes_row = plt.subplots(1, len(per_task), figsize=(6.5 * len(per_task), 4.6), squeeze=False)
    for axes, (task, summary) in zip(axes_row[0], per_task.items(), strict=True):
        for key, row in summary["strategies"].items():
            points = [(int(b), s) for b, s in row["regret_by_budget"].items() if math.isfinite(s["median"])]
            if not points:
                continue
            xs = [b for b, _ in points]
            line = axes.plot(xs, [s["median"] for _, s in points], label=f"({key}) {row['label']}", lw=1.6)[0]
            highs = [s["high"] if math.isfinite(s["high"]) else float("nan") for _, s in points]
            axes.fill_between(xs, [s["low"] for _, s in points], highs, color=line.get_color(), alpha=0.15)
        axes.axhline(summary["epsilon"], color="black", linestyle=":", label="ε (seed sd of the best config)")
        axes.set_yscale("symlog", linthresh=max(summary["epsilon"] / 4, 1e-4))
        axes.set_ylim(bottom=0)
        axes.set_xlabel("training steps spent")
        axes.set_ylabel("true regret of the chosen configuration")
        axes.set_title(f"{task}: median over replays, 95% bootstrap band")
        axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
