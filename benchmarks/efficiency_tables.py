"""Markdown tables for RESULTS.md from the replay results (hpo_efficiency.json, hpo_defaults_table.json), so
the numbers in the text are the numbers in the files.

    python benchmarks/efficiency_tables.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def cell(stats: dict[str, Any] | None, key: str = "median", digits: str = ".3g") -> str:
    if not stats:
        return "undefined"

    def num(value: float | None) -> str:
        return "∞" if value is None else format(value, digits)

    return f"{num(stats[key])} [{num(stats['low'])}, {num(stats['high'])}]"


def strategy_table(task: str, summary: dict[str, Any]) -> str:
    interval = summary.get("epsilon_ci")
    shown = f" [{interval[0]:.4f}, {interval[1]:.4f}] ({summary['epsilon_rule']})" if interval else ""
    stays = "steps_to_stay_within_epsilon" in next(iter(summary["strategies"].values()))
    lines = [
        f"**{task}** — ε = {summary['epsilon']:.4f}{shown}, best true loss {summary['best_true_loss']:.4f} at "
        f"{summary['best_configuration']}; equal compute = {summary['equal_compute_steps']:.0f} steps "
        f"(the defaults' median spend)",
        "",
        "| strategy | true regret at the end | regret at equal compute | steps to regret ≤ ε | reached ε | steps |"
        + (" steps to *stay* within ε (KM) | stayed | P(regret ≤ ε) 25/50/100% | oracle fraction |" if stays else ""),
        "|---|---|---|---|---|---|" + ("---|---|---|---|" if stays else ""),
    ]
    for key, row in summary["strategies"].items():
        line = (
            f"| ({key}) {row['label']} | {cell(row['final_regret'])} | {cell(row['regret_at_equal_compute'])} | "
            f"{cell(row['steps_to_epsilon'], digits='.0f')} | {row['reached_epsilon']}/{row['replays']} | "
            f"{cell(row['total_steps'], digits='.0f')} |"
        )
        if stays:
            stay, within = row["steps_to_stay_within_epsilon"], row["p_within_epsilon"]
            oracle = cell(row["oracle_fraction"], "ratio", ".2f") if row["oracle_fraction"] else "undefined"
            line += (
                f" {cell(stay, digits='.0f')} | {stay['events']}/{stay['replays']} | "
                f"{' / '.join(format(within[b]['p'], '.2f') for b in ('25%', '50%', '100%'))} | {oracle} |"
            )
        lines.append(line)
    ratios = [
        f"{name.removeprefix('ratio_vs_')}: {cell(summary[name], 'ratio', '.2f')}"
        for name in ("ratio_vs_random", "ratio_vs_tpe_no_pruning", "ratio_vs_hf_default")
        if name in summary and {"b", "c", "e"} & set(summary["strategies"])  # the anchors were replayed
    ]
    if ratios:
        lines += ["", "Compute ratios of (a) to reach ε (median steps ÷ median steps, paired bootstrap 95% CI): "]
        lines[-1] += "; ".join(ratios) + "."
    stay_ratios = [
        f"{name.removeprefix('stay_ratio_vs_')}: {cell(summary[name], 'ratio', '.2f')}"
        for name in ("stay_ratio_vs_random", "stay_ratio_vs_tpe_no_pruning")
        if summary.get(name)
    ]
    if stays:
        lines += ["", "Ratios of (a) to *stay* within ε (KM median ÷ KM median, paired bootstrap 95% CI): "]
        lines[-1] += ("; ".join(stay_ratios) or "undefined (an anchor's median is never)") + "."
    return "\n".join(lines)


def main() -> None:
    for name in sys.argv[1:] or ["hpo_efficiency.json", "hpo_defaults_table.json"]:
        path = RESULTS / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        print(f"### {name}\n")
        for task, summary in data["tasks"].items():
            print(strategy_table(task, summary) + "\n")


if __name__ == "__main__":
    main()
