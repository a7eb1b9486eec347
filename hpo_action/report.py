"""Human-readable renderings of results: the gate verdict (terminal) and, later, markdown and plots."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

_STYLE = {"promote": "bold green", "reject": "bold red", "inconclusive": "bold yellow"}


def verdict(result: dict[str, Any]) -> Group:
    """The gate's decision, its reasons, the primary test and the forgetting table."""
    decision = result["decision"]
    parts: list[Any] = [Text(f"gate: {decision.upper()}", style=_STYLE[decision])]
    parts.extend(Text(f"  • {reason}") for reason in result["reasons"])
    p = result["primary"]
    primary = Table(title=f"primary: {p['metric']} ({p['test']}, one-sided)", title_justify="left")
    for column in ("n", "candidate", "reference", "delta", f"{p['confidence']:.0%} CI", "p", "MDE"):
        primary.add_column(column, justify="right")
    primary.add_row(
        str(p["n"]),
        _num(p["candidate"]),
        _num(p["reference"]),
        f"{p['delta']:+.4g}",
        f"[{_num(p['ci'][0])}, {_num(p['ci'][1])}]",
        f"{p['p_value']:.3g}",
        _num(p["mde"]),
    )
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
        for column in ("benchmark", "metric", "reference", "candidate", "delta", "bound", "margin", "adj. p", ""):
            table.add_column(column, justify="left" if column in ("benchmark", "metric") else "right")
        for row in result["forgetting"]:
            table.add_row(
                row["name"],
                row["metric"],
                _num(row["reference"]),
                _num(row["candidate"]),
                f"{row['delta']:+.4g}",
                _num(row["bound"]),
                f"−{row['margin']:g}",
                f"{row['p_adjusted']:.3g}",
                "[green]pass[/green]" if row["passed"] else "[red]FAIL[/red]",
            )
        parts.append(table)
    return Group(*parts)


def _num(value: float) -> str:
    return f"{value:.4g}"
