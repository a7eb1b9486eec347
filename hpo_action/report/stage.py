"""The report stage: report.md always; in GitHub Actions also the step outputs, the job summary and the PR comment;
and the doctor's top findings on the console. It reads the typed results only (RunSummary, GateDecision,
findings), never the run's files by name."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from rich.console import Console

from hpo_action.files import write_text_atomic
from hpo_action.judge.decision import GateDecision
from hpo_action.layout import RunLayout
from hpo_action.report import github
from hpo_action.report.doctor import Finding, findings_table
from hpo_action.report.markdown import run_markdown
from hpo_action.report.tables import to_rich
from hpo_action.search.summary import RunSummary


def report_stage(
    layout: RunLayout,
    summary: RunSummary,
    decision: GateDecision,
    findings: list[Finding],
    registry_line: str | None = None,
    champion: tuple[int, str] | None = None,
    published: Path | None = None,
    comment_pr: bool = False,
) -> None:
    """Write report.md; in GitHub Actions publish the step outputs (with `champion`: the version and URL the
    registry now serves), the job summary and, with `comment_pr`, the PR comment."""
    plots = sorted(path.name for path in layout.plots_dir.glob("*.png"))
    markdown = run_markdown(summary, decision, registry_line, plots, findings)
    write_text_atomic(layout.report, markdown)
    env = github.actions_env()
    if env is None:
        return
    version, url = champion if champion is not None else (None, None)
    outputs = github.step_outputs(summary, decision, version, url, layout.report, published)
    github.publish_step(markdown, outputs, env, comment_pr)


def print_findings(findings: list[Finding], console: Console) -> None:
    """The doctor's findings as a table, with where to read them all."""
    if findings:
        console.print(to_rich(findings_table(findings)))
        console.print("hpo-action doctor RUN_DIR lists every finding (--json for machines)")


def section(title: str, console: Console) -> AbstractContextManager[None]:
    """A foldable section of the log in GitHub Actions, on the console's stream so the lines stay in order."""
    return github.group(title, console.file) if github.actions_env() is not None else nullcontext()
