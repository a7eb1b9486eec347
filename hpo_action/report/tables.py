"""Human-readable renderings of results: one table model for the gate, drawn in the terminal (rich) and as
markdown (job summary, PR comment, report.md, model card); and the study's plots as PNG.

Every renderer reads the typed `GateDecision`; none re-reads gate.json by key. Numbers use the ASCII minus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from hpo_action.judge.decision import FORGETTING_RULE, Check, ForgettingResult, GateDecision, PrimaryResult
from hpo_action.judge.decoding import DecodingSearch
from hpo_action.judge.sequence import SequenceLevel
from hpo_action.report.escape import md_text
from hpo_action.search.space import DEFAULTS
from hpo_action.search.summary import RunSummary, TrialRecord

_STYLE = {"promote": "bold green", "reject": "bold red", "inconclusive": "bold yellow"}
MARKS = {True: "✓", False: "✗", None: "?"}
STATUS_WORDS = {"promote": "better", "reject": "not better", "inconclusive": "cannot tell"}


@dataclass(frozen=True)
class TableModel:
    """A titled table of text cells; the first `left` columns are left-aligned, the rest right-aligned."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    left: int = 1


def num(value: float) -> str:
    return f"{value:.4g}"


def fmt(value: Any) -> str:
    """Any cell value: numbers to 4 significant digits (integers whole), booleans lower-case, None as '-'."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        number = float(value)
        return str(int(number)) if number.is_integer() and abs(number) < 1e15 else f"{number:.4g}"
    return str(value)


def signed(value: float) -> str:
    return f"{value:+.4g}"


def mark(check: Check) -> str:
    return MARKS[check.ok]


def primary_table(p: PrimaryResult) -> TableModel:
    """The primary test: means, the improvement, the one-sided bounds that decide, p, power."""
    level = f"{1 - p.alpha:.0%}"
    columns = (
        "metric",
        "n",
        "candidate",
        "reference",
        "delta",
        f"one-sided {level} lower",
        f"one-sided {level} upper",
        "p",
        "MDE",
    )
    row = (
        p.metric,
        str(p.n),
        num(p.candidate),
        num(p.reference),
        signed(p.delta),
        num(p.bound),
        num(p.upper_bound),
        f"{p.p_value:.3g}",
        num(p.mde),
    )
    title = (
        f"primary: {p.metric}, {p.test} (H0: improvement <= {p.min_effect:g}, alpha {p.alpha:g}; the two bounds "
        f"invert this test and together form a two-sided {p.confidence:.0%} interval)"
    )
    return TableModel(title, columns, (row,))


def contingency_table(p: PrimaryResult) -> TableModel | None:
    if p.table is None:
        return None
    t = p.table
    row = (str(t.both), str(t.candidate_only), str(t.reference_only), str(t.neither))
    return TableModel("paired outcomes", ("both right", "candidate only", "reference only", "neither"), (row,), left=0)


def forgetting_table(rows: tuple[ForgettingResult, ...], alpha: float) -> TableModel | None:
    if not rows:
        return None
    lower = f"one-sided {1 - alpha:.0%} lower"
    columns = ("", "benchmark", "metric", "n", "base", "candidate", "delta", lower, "margin", "p", "result")
    body = tuple(
        (
            MARKS[{"passed": True, "failed": False}.get(row.status)],
            row.name,
            row.metric,
            str(row.n),
            num(row.reference),
            num(row.candidate),
            signed(row.delta),
            num(row.bound),
            f"-{row.margin:g}",
            f"{row.p_value:.3g}",
            row.status,
        )
        for row in rows
    )
    title = f"forgetting: non-inferiority against the base model, per set; {FORGETTING_RULE}"
    return TableModel(title, columns, body, left=3)


def gate_tables(decision: GateDecision) -> list[TableModel]:
    tables = [
        primary_table(decision.primary),
        contingency_table(decision.primary),
        forgetting_table(decision.forgetting, decision.primary.alpha),
    ]
    return [table for table in tables if table is not None]


def evidence_line(decision: GateDecision) -> str | None:
    """Which weights and which test rows the verdict is about (publish refuses any others)."""
    if not decision.adapter_sha256:
        return None
    return (
        f"evidence for weights sha256 {decision.adapter_sha256[:16]} on test set "
        f"{(decision.test_fingerprint or '?')[:16]}"
    )


def error_control_line(decision: GateDecision) -> str | None:
    """Which error the decision controls: this gate's number and level in its registry's life (`gate.sequence`)."""
    recorded = decision.config.sequence
    return None if recorded is None else f"error control: {SequenceLevel.from_json(recorded).line()}"


def forgetting_line(decision: GateDecision) -> str | None:
    """Said when no forgetting set ran, so that a verdict never implies that nothing was forgotten."""
    return None if decision.forgetting else "forgetting: not checked (no gate.forgetting set was configured)"


def estimand_lines(decision: GateDecision) -> list[str]:
    """What delta and the bounds estimate, in words: the primary metric's, and a forgetting set's where it differs."""
    primary = decision.primary
    lines = [f"{primary.metric}: delta estimates {primary.estimand}"] if primary.estimand else []
    lines += [
        f"{row.name}: delta estimates {row.estimand}"
        for row in decision.forgetting
        if row.estimand and row.estimand != primary.estimand
    ]
    return lines


def to_rich(table: TableModel) -> Table:
    rendered = Table(title=table.title, title_justify="left")
    for index, column in enumerate(table.columns):
        rendered.add_column(column, justify="left" if index < table.left else "right")
    for row in table.rows:
        rendered.add_row(*row)
    return rendered


def to_markdown(table: TableModel) -> list[str]:
    cells = [list(table.columns), *(list(row) for row in table.rows)]
    lines = [f"**{md_text(table.title)}**", ""]
    lines += ["| " + " | ".join(md_text(c) for c in cells[0]) + " |", "|" + "|".join("---" for _ in cells[0]) + "|"]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in cells[1:]]
    return [*lines, ""]


def verdict(decision: GateDecision) -> Group:
    """The decision, each check marked ✓ / ✗ / ? with the one that decided first, and the tables."""
    parts: list[Any] = [Text(f"gate: {decision.decision.upper()}", style=_STYLE[decision.decision])]
    parts.extend(Text(f"  {mark(check)} {check.text}") for check in decision.checks())
    note = forgetting_line(decision)
    if note:
        parts.append(Text(f"  ? {note}"))
    parts.extend(Text(f"  {line}", style="dim") for line in estimand_lines(decision))
    control = error_control_line(decision)
    if control:
        parts.append(Text(f"  {control}"))
    evidence = evidence_line(decision)
    if evidence:
        parts.append(Text(f"  {evidence}", style="dim"))
    parts.extend(to_rich(table) for table in gate_tables(decision))
    return Group(*parts)


def verdict_markdown(decision: GateDecision) -> list[str]:
    """The same verdict as markdown lines, for the job summary, the PR comment and report.md."""
    lines = [f"### Gate: {decision.decision}", ""]
    lines += [f"- {mark(check)} {md_text(check.text)}" for check in decision.checks()]
    note = forgetting_line(decision)
    lines += [f"- ? {md_text(note)}"] if note else []
    lines += ["", *(f"_{md_text(line)}_" for line in estimand_lines(decision))]
    control = error_control_line(decision)
    lines += ["", f"- {md_text(control)}"] if control else []
    evidence = evidence_line(decision)
    lines += ["", f"_{md_text(evidence)}_"] if evidence else []
    lines.append("")
    for table in gate_tables(decision):
        lines += to_markdown(table)
    return lines


def trials_table(summary: RunSummary, errors: bool = True) -> TableModel:
    """Every trial: state, value, steps, seconds, the searched parameters (and the error, cut to 120 characters);
    the best one starred."""
    names = sorted({name for record in summary.trials for name in record.params})
    best = summary.best.number if summary.best else None
    rows = tuple(
        (
            f"{record.number} *" if record.number == best else str(record.number),
            record.state.lower(),
            trial_value(record),
            fmt(record.steps),
            fmt(record.seconds),
            *(fmt(record.params.get(name)) for name in names),
            *((record.error[:120],) if errors else ()),
        )
        for record in summary.trials
    )
    columns = ("#", "state", summary.objective_metric, "steps", "s", *names, *(("error",) if errors else ()))
    return TableModel("trials", columns, rows, left=2)


def trial_value(record: TrialRecord) -> str:
    """A trial's first-objective value; a pruned trial's is where it stopped, marked so."""
    if record.state == "PRUNED" and record.value is not None:
        return f"{fmt(record.value)} (pruned)"
    return fmt(record.value)


def best_table(summary: RunSummary) -> TableModel | None:
    if summary.best is None:
        return None
    title = f"best trial #{summary.best.number}: {summary.objective_metric} = {fmt(summary.best.value)}"
    rows = tuple((name, fmt(value)) for name, value in sorted(summary.best.params.items()))
    return TableModel(title, ("parameter", "value"), rows)


def decoding_table(result: DecodingSearch) -> TableModel:
    """Every decoding trial on the validation split; the chosen one starred (greedy, trial 0, unless beaten)."""
    rows = tuple(
        (
            f"{t.number} *" if t.number == result.best.number else str(t.number),
            "sample" if t.decoding.do_sample else "greedy",
            *(fmt(v) if t.decoding.do_sample else "-" for v in (t.decoding.temperature, t.decoding.top_p)),
            fmt(t.decoding.top_k) if t.decoding.do_sample else "-",
            fmt(t.decoding.repetition_penalty),
            fmt(t.decoding.max_new_tokens),
            fmt(t.value),
        )
        for t in result.trials
    )
    columns = ("#", "decoding", "temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", result.metric)
    return TableModel(f"decoding search on {result.n} validation examples", columns, rows, left=2)


def pareto_table(summary: RunSummary) -> TableModel | None:
    """The non-dominated trials of a multi-objective study: each objective, the forgetting drop per probe set,
    whether it is within every margin, and the searched parameters; the chosen trial starred."""
    if not summary.multi_objective or summary.selection is None:
        return None
    front = set(summary.selection.pareto_front)
    records = [record for record in summary.trials if record.number in front]
    sets = sorted({name for record in records for name in record.forgetting_drop})
    names = sorted({name for record in records for name in record.params})
    metrics = [objective["metric"] for objective in summary.selection.objectives]
    chosen = summary.best.number if summary.best else None
    rows = tuple(
        (
            f"{record.number} *" if record.number == chosen else str(record.number),
            *(fmt(value) for value in record.values),
            *(signed(0.0 - record.forgetting_drop[name]) if name in record.forgetting_drop else "-" for name in sets),
            MARKS[all(excess <= 0 for excess in record.forgetting.values())],
            *(fmt(record.params.get(name)) for name in names),
        )
        for record in records
    )
    columns = ("#", *metrics, *(f"{name} delta" for name in sets), "within margin", *names)
    title = f"Pareto front ({len(records)} trials); * chosen: {summary.selection.rule}"
    return TableModel(title, columns, rows)


def tradeoff_line(summary: RunSummary) -> str | None:
    """The chosen trial's forgetting on the per-trial probes (delta against the base), and how many trials were
    feasible, when probes ran."""
    best = summary.best
    feasible = summary.selection.feasible if summary.selection else None
    counted = None
    if feasible is not None:
        completed = summary.states.get("COMPLETE", 0)
        counted = (
            f"{feasible} of {completed} completed trials feasible (the gate's forgetting test passed on the probes)"
        )
    if summary.selection and summary.selection.fallback:
        counted = f"{counted}; {summary.selection.fallback}" if counted else summary.selection.fallback
    if best is None or not best.forgetting_drop:
        return counted
    deltas = ", ".join(f"{name} {signed(0.0 - drop)}" for name, drop in sorted(best.forgetting_drop.items()))
    line = f"trade-off: trial #{best.number}, {summary.objective_metric} {fmt(best.value)}; forgetting probes: {deltas}"
    return f"{line}; {counted}" if counted else line


def warm_start_line(summary: RunSummary) -> str | None:
    """What the search found beyond its starting point: the chosen trial against the warm start (trial 0, the train
    defaults) on the objective. None without a warm start or a chosen trial, and for several objectives (the
    Pareto table compares those)."""
    best, warm = summary.best, next((r for r in summary.trials if r.warm_start == DEFAULTS), None)
    if best is None or warm is None or summary.multi_objective:
        return None
    metric = summary.objective_metric
    if warm.number == best.number:
        return (
            f"the warm start (trial #{warm.number}, the train defaults) is the best trial: the search found nothing "
            "better"
        )
    if warm.value is None:
        state = warm.state.lower()
        return f"best trial #{best.number}, {metric} {fmt(best.value)}; the warm start (#{warm.number}) {state}"
    gain = best.value - warm.value if summary.objective_direction == "maximize" else warm.value - best.value
    if gain > 0:
        return (
            f"best trial #{best.number} beats the warm start (#{warm.number}, the train defaults) by {fmt(gain)} "
            f"{metric} ({fmt(best.value)} against {trial_value(warm)})"
        )
    forgot = sorted(name for name, excess in warm.forgetting.items() if excess > 0)
    why = f"it failed the forgetting test on the {', '.join(forgot)} probes" if forgot else f"it {warm.state.lower()}"
    return (
        f"best trial #{best.number}, {metric} {fmt(best.value)}, chosen over the warm start (#{warm.number}, "
        f"{trial_value(warm)}): {why}"
    )


def checkpoint_line(summary: RunSummary) -> str | None:
    """search.resume_trials: which trials resumed from a checkpoint, and what one checkpoint weighs."""
    sizes = [r.checkpoint_bytes for r in summary.trials if r.checkpoint_bytes]
    if not sizes:
        return None
    resumed = [f"#{r.number} from step {r.resumed_from_step}" for r in summary.trials if r.resumed_from_step]
    which = f"{len(resumed)} resumed ({', '.join(resumed)})" if resumed else "none resumed"
    return f"checkpoints: {which}; largest checkpoint {max(sizes) / 1e6:.2f} MB, deleted as each trial ended"
