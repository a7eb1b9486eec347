"""The run as markdown: the job summary, the PR comment and report.md are this one document."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from hpo_action.judge.decision import GateDecision
from hpo_action.report.doctor import Finding
from hpo_action.report.tables import (
    best_table,
    fmt,
    pareto_table,
    to_markdown,
    tradeoff_line,
    trials_table,
    verdict_markdown,
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
        f"`{summary.base_model}` ({summary.method}) · study `{summary.study_name}` · "
        f"{summary.n_trials} trials ({states or 'none'}) · {summary.sampler} sampler, {summary.pruner} pruner · "
        f"{fmt(summary.elapsed_s)} s",
        "",
    ]
    if summary.stopped_early:
        lines += [f"> **Note:** {summary.stopped_early}.", ""]
    if decision:
        lines += verdict_markdown(decision)
    if registry_line:
        lines += [f"**Registry:** {registry_line}", ""]
    if findings:
        lines += ["**Doctor** (`hpo-action doctor` for all findings)", ""]
        lines += [f"- **{f.title}**: {f.evidence}. Try: {f.remedy}." for f in findings[:TOP_FINDINGS]]
        lines.append("")
    tradeoff = tradeoff_line(summary)
    if tradeoff:
        lines += [f"**{tradeoff}** (delta against the base model; the gate's own test is above)", ""]
    for table in (pareto_table(summary), best_table(summary)):
        if table:
            lines += to_markdown(table)
    if summary.trials:
        lines += to_markdown(trials_table(summary))
    names = ", ".join(f"`plots/{name}`" for name in plots)
    if names:
        lines += [
            "**Plots**",
            "",
            f"{names} in the output folder: upload it as a workflow artifact; a published version keeps them in the "
            "registry. They are not sent to any image host.",
            "",
        ]
    return "\n".join(lines)
