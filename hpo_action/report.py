"""Human-readable renderings of results: the gate verdict in the terminal, and the study's plots as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

_STYLE = {"promote": "bold green", "reject": "bold red", "inconclusive": "bold yellow"}
FORGETTING_COLUMNS = ("benchmark", "metric", "reference", "candidate", "delta", "bound", "margin", "adj. p", "result")


def primary_columns(primary: dict[str, Any]) -> list[str]:
    return ["n", "candidate", "reference", "delta", f"{primary['confidence']:.0%} CI", "p", "MDE"]


def primary_cells(primary: dict[str, Any]) -> list[str]:
    """The primary test as table cells, the same in the terminal and in the job summary."""
    p = primary
    return [
        str(p["n"]),
        _num(p["candidate"]),
        _num(p["reference"]),
        f"{p['delta']:+.4g}",
        f"[{_num(p['ci'][0])}, {_num(p['ci'][1])}]",
        f"{p['p_value']:.3g}",
        _num(p["mde"]),
    ]


def forgetting_cells(row: dict[str, Any], failed: str = "FAIL") -> list[str]:
    """One forgetting row as table cells, the same in the terminal and in the job summary."""
    return [
        row["name"],
        row["metric"],
        _num(row["reference"]),
        _num(row["candidate"]),
        f"{row['delta']:+.4g}",
        _num(row["bound"]),
        f"−{row['margin']:g}",
        f"{row['p_adjusted']:.3g}",
        "pass" if row["passed"] else failed,
    ]


def verdict(result: dict[str, Any]) -> Group:
    """The gate's decision, its reasons, the primary test and the forgetting table."""
    decision = result["decision"]
    parts: list[Any] = [Text(f"gate: {decision.upper()}", style=_STYLE[decision])]
    parts.extend(Text(f"  • {reason}") for reason in result["reasons"])
    p = result["primary"]
    primary = Table(title=f"primary: {p['metric']} ({p['test']}, one-sided)", title_justify="left")
    for column in primary_columns(p):
        primary.add_column(column, justify="right")
    primary.add_row(*primary_cells(p))
    parts.append(primary)
    if "table" in p:
        t = p["table"]
        parts.append(
            Text(
                f"  both right {t['both']} · candidate only {t['candidate_only']} · "
                f"reference only {t['reference_only']} · neither {t['neither']}"
            )
        )
    if result["forgetting"]:
        table = Table(title="forgetting (non-inferiority, Holm-adjusted)", title_justify="left")
        for column in FORGETTING_COLUMNS:
            table.add_column(column, justify="left" if column in ("benchmark", "metric") else "right")
        for row in result["forgetting"]:
            *cells, outcome = forgetting_cells(row)
            table.add_row(*cells, f"[green]{outcome}[/green]" if row["passed"] else f"[red]{outcome}[/red]")
        parts.append(table)
    return Group(*parts)


def _num(value: float) -> str:
    return f"{value:.4g}"


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
