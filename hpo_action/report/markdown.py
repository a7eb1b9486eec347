"""The run as markdown: the job summary, the PR comment and report.md are this one document. Every string that
came from the user or the data (names, titles, paths, messages) goes through `md_text`, so it renders as text."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hpo_action.judge.decision import GateDecision
from hpo_action.report.doctor import Finding
from hpo_action.report.escape import md_text
from hpo_action.report.tables import (
    best_table,
    fmt,
    pareto_table,
    to_markdown,
    tradeoff_line,
    trials_table,
    verdict_markdown,
    warm_start_line,
)
from hpo_action.search.summary import RunSummary

TOP_FINDINGS = 3  # the doctor's findings a run shows; `hpo-action doctor` shows them all


def run_markdown(
    summary: RunSummary,
    decision: GateDecision | None,
    registry_line: str | None = None,
    plots: Iterable[str] = (),
    findings: Sequence[Finding] = (),
) -> str:
    """Verdict, gate and forgetting tables, the registry's outcome, the doctor's top findings, best parameters,
    every trial, and where the plots are (file names, not images: nothing is sent to a public host)."""
    lines = [f"## hpo-action: {decision.decision.upper()}" if decision else "## hpo-action: search", ""]
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary.states.items()))
    lines += [
        f"{md_text(summary.base_model)} ({md_text(summary.method)}) · study {md_text(summary.study_name)} · "
        f"{summary.n_trials} trials ({md_text(states) or 'none'}) · {md_text(summary.sampler)} sampler, "
        f"{md_text(summary.pruner)} pruner · {fmt(summary.elapsed_s)} s",
        "",
    ]
    if summary.stopped_early:
        lines += [f"> **Note:** {md_text(summary.stopped_early)}.", ""]
    if decision:
        lines += verdict_markdown(decision)
    if registry_line:
        lines += [f"**Registry:** {md_text(registry_line)}", ""]
    if findings:
        lines += ["**Doctor** (`hpo-action doctor` for all findings)", ""]
        lines += [
            f"- **{md_text(f.title)}**: {md_text(f.evidence)}. Try: {md_text(f.remedy)}."
            for f in findings[:TOP_FINDINGS]
        ]
        lines.append("")
    beyond = warm_start_line(summary)
    if beyond:
        lines += [md_text(beyond), ""]
    tradeoff = tradeoff_line(summary)
    if tradeoff:
        lines += [f"**{md_text(tradeoff)}** (delta against the base model; the gate's own test is above)", ""]
    for table in (pareto_table(summary), best_table(summary)):
        if table:
            lines += to_markdown(table)
    if summary.trials:
        lines += to_markdown(trials_table(summary))
    names = ", ".join(md_text(f"plots/{name}") for name in plots)
    if names:
        lines += [
            "**Plots**",
            "",
            f"{names} in the output folder: upload it as a workflow artifact; a published version keeps them in the "
            "registry. They are not sent to any image host.",
            "",
        ]
    return "\n".join(lines)
