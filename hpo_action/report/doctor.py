"""The run doctor: a finished study read for the field's common failures, each finding with its evidence and the
remedy to try (docs/domain.md, "Common failures and what to try").

- loss not decreasing: diverging or spiking trials at the high end of the learning rates tried (too high), or
  barely moving ones at the low end, or everywhere (too low);
- loss spikes or non-finite losses: lower the rate, clip gradients, warm up;
- validation loss rising while the training loss falls: overfitting;
- out of memory: smaller micro-batch with more accumulation, gradient checkpointing, QLoRA;
- and about the search itself: too few trials for the parameters searched, a pruner that stopped everything at
  its first rung, the best trial at the edge of a range, a test set too small for the gate's target effect.

Pure: a typed RunSummary, the config and the gate's decision in, findings out; `hpo-action doctor` prints them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from hpo_action.config import HpoConfig, ParamSpec, TrainConfig
from hpo_action.config.remedies import forgetting_remedies
from hpo_action.config.starting import starting_points
from hpo_action.judge.decision import GateDecision
from hpo_action.report.tables import TableModel, fmt
from hpo_action.search.space import trial_defaults
from hpo_action.search.summary import RunSummary, TrialRecord

STALLED = 0.05  # a loss that fell by less than 5 % of its first value did not really decrease
ROSE = 0.02  # a loss that ends 2 % above where it started went the wrong way
SPIKE = 1.5  # a logged loss 1.5 × the one before it is a spike, if the jump is also larger than the noise:
SPIKE_SCALE = 0.1  # at least this share of the highest loss logged before it (the scale the trial trained at)
LOSS_NOISE = 0.05  # and at least this many nats per token: smaller moves of a logged loss are batch noise
OVERFIT = 0.05  # validation loss 5 % above its minimum, at the end, while training loss still fell
EDGE = 0.05  # the outer 5 % of a range (on the log scale for log ranges)
EDGE_MIN_TRIALS = 3  # completed trials before the best one's place in a range means anything
FIRST_RUNG_SHARE = 0.75
_SEVERITY = {3: "high", 2: "medium", 1: "low"}


@dataclass(frozen=True)
class Finding:
    """One diagnosis: what is wrong, what shows it, and what to try."""

    code: str
    severity: int  # 3 high, 2 medium, 1 low
    title: str
    evidence: str
    remedy: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "severity": _SEVERITY[self.severity]}

    def text(self) -> str:
        """The finding for a terminal: severity and title, then its evidence and the remedy."""
        return f"[{_SEVERITY[self.severity]}] {self.title}\n  evidence: {self.evidence}\n  try: {self.remedy}"


@dataclass(frozen=True)
class _Trial:
    """A trial as the doctor reads it: its learning rate and the loss curve that says how training went."""

    record: TrialRecord
    learning_rate: float
    loss: list[tuple[float, float]]  # the training loss curve, else the objective's when it is a loss
    evals: list[tuple[float, float]]  # the objective at each evaluation
    train: list[tuple[float, float]]  # the training loss at each log

    @property
    def non_finite(self) -> bool:
        return "non-finite" in self.record.error

    def drop(self) -> float | None:
        """How much the loss fell, as a share of its first value; None with fewer than two points."""
        if len(self.loss) < 2 or self.loss[0][1] == 0:
            return None
        return (self.loss[0][1] - self.loss[-1][1]) / abs(self.loss[0][1])

    def spikes(self) -> list[tuple[float, float, float]]:
        """(step, before, after) where a logged loss jumped by SPIKE × or more and by more than the noise: a move
        of 0.03 -> 0.05 late in a run that started at 2.0 is batch noise, not a spike."""
        found, peak = [], -math.inf
        for (_, before), (step, after) in zip(self.loss, self.loss[1:], strict=False):
            peak = max(peak, before)
            floor = max(SPIKE_SCALE * peak, LOSS_NOISE)
            if before > 0 and after >= SPIKE * before and after - before >= floor:
                found.append((step, before, after))
        return found

    @property
    def rose(self) -> bool:
        """The loss ended above where it started, by more than ROSE of it and more than the noise."""
        if len(self.loss) < 2:
            return False
        first, last = self.loss[0][1], self.loss[-1][1]
        return last - first > max(ROSE * abs(first), LOSS_NOISE)

    @property
    def diverged(self) -> bool:
        return self.non_finite or bool(self.spikes()) or self.rose

    def still_falling(self) -> bool:
        """The loss was still going down at the end, about as fast per step as before (a slow, steady descent),
        rather than having levelled off (it fell early, then stayed)."""
        if len(self.loss) < 3:
            return False
        (s0, first), (s1, middle), (s2, last) = self.loss[0], self.loss[len(self.loss) // 2], self.loss[-1]
        early, late = (first - middle) / max(s1 - s0, 1), (middle - last) / max(s2 - s1, 1)
        return late > 0 and late >= 0.5 * early

    def stalled(self, lowest: float) -> bool:
        """Fell by less than STALLED and could have gone further: it was still falling slowly at the end, or
        another trial reached a loss clearly below its own (`lowest`, the study's lowest final training loss).
        A loss that levelled off by its first log at the lowest level the study reached learned; it did not stall."""
        drop = self.drop()
        if self.diverged or drop is None or drop >= STALLED:
            return False
        return self.still_falling() or lowest < (1 - STALLED) * self.loss[-1][1]


@dataclass(frozen=True)
class _Run:
    summary: RunSummary
    cfg: HpoConfig
    decision: GateDecision | None
    trials: list[_Trial]

    @property
    def lowest_loss(self) -> float:
        """The lowest final loss among the trials that did not diverge (inf when there is none)."""
        return min((t.loss[-1][1] for t in self.trials if t.loss and not t.diverged), default=math.inf)

    def stalled(self) -> list[_Trial]:
        return [t for t in self.trials if t.stalled(self.lowest_loss)]

    def best_lr(self) -> float | None:
        best = self.summary.best
        if best is None:
            return None
        return float(best.params.get("learning_rate", self.cfg.learning_rate))

    def severity(self, flagged: list[_Trial]) -> int:
        """High when the best trial itself is among the flagged ones (or there is none), else medium: the
        study found a good setting, but part of the range was wasted."""
        best = self.summary.best
        return 3 if best is None or any(t.record.number == best.number for t in flagged) else 2


def diagnose(summary: RunSummary, cfg: HpoConfig, decision: GateDecision | None = None) -> list[Finding]:
    """Every finding, the most severe first (in the order of the checks within a severity)."""
    loss_objective = summary.objective_direction == "minimize" and "loss" in summary.objective_metric
    # Under kfold the curves restart at every fold (a fresh adapter): read the first fold's, which every trial has.
    last_step = cfg.search.budget.max_steps if cfg.folds > 1 else math.inf
    trials = []
    for record in summary.trials:
        evals, train = (
            [(float(s), float(v)) for s, v in c if s <= last_step] for c in (record.curve, record.train_curve)
        )
        lr = float(record.params.get("learning_rate", cfg.learning_rate))
        trials.append(_Trial(record, lr, train or (evals if loss_objective else []), evals, train))
    run = _Run(summary, cfg, decision, trials)
    checks: list[Callable[[_Run], list[Finding]]] = [
        _learning_rate_too_high,
        _learning_rate_too_low,
        _overfitting,
        _out_of_memory,
        _spikes_or_nan,
        _pruned_everything,
        _pruned_at_first_rung,
        _best_at_edge,
        _forgetting_blocks_promotion,
        _no_trial_within_margin,
        _test_too_small,
        _too_few_trials,
    ]
    found = [finding for check in checks for finding in check(run)]
    return sorted(found, key=lambda finding: -finding.severity)


def _describe(trial: _Trial) -> str:
    head = f"#{trial.record.number} (LR {fmt(trial.learning_rate)}"
    if trial.non_finite:
        return f"{head}: {trial.record.error[:80]})"
    if len(trial.loss) >= 2:
        return f"{head}: loss {fmt(trial.loss[0][1])} -> {fmt(trial.loss[-1][1])})"
    return head + ")"


def _listed(trials: list[_Trial], limit: int = 3) -> str:
    shown = ", ".join(_describe(t) for t in trials[:limit])
    return shown + (f" and {len(trials) - limit} more" if len(trials) > limit else "")


def _learning_rate_too_high(run: _Run) -> list[Finding]:
    diverged = [t for t in run.trials if t.diverged]
    stalled = run.stalled()
    healthy = [t for t in run.trials if t.loss and not t.diverged and t not in stalled]
    if not diverged:
        return []
    lowest = min(t.learning_rate for t in diverged)
    if healthy and lowest <= max(t.learning_rate for t in healthy):
        return []  # divergence is not tied to the high rates: look at the spikes finding instead
    best = run.best_lr()
    beside = f"; the best trial used {fmt(best)}" if best is not None else ""
    return [
        Finding(
            "lr_too_high",
            run.severity(diverged),
            "loss not decreasing: learning rate too high",
            f"{len(diverged)} of {len(run.trials)} trials diverged, rose or spiked, all at LR >= {fmt(lowest)}"
            f"{beside}: {_listed(sorted(diverged, key=lambda t: -t.learning_rate))}",
            f"lower the top of the learning-rate range below {fmt(lowest)} (search.space.learning_rate.high), "
            "warm up (train.warmup_ratio 0.03-0.1) and clip gradients (train.max_grad_norm 0.3-1.0)",
        )
    ]


def _learning_rate_too_low(run: _Run) -> list[Finding]:
    stalled = run.stalled()
    moving = [t for t in run.trials if t.loss and t not in stalled and not t.diverged]
    if not stalled:
        return []
    highest = max(t.learning_rate for t in stalled)
    if moving and highest >= min(t.learning_rate for t in moving):
        return []  # stalling is not tied to the low rates
    where = "every trial" if not moving else f"{len(stalled)} of {len(run.trials)} trials, all at LR <= {fmt(highest)},"
    return [
        Finding(
            "lr_too_low",
            run.severity(stalled),
            "loss not decreasing: learning rate too low",
            f"in {where} the loss fell by less than {STALLED:.0%} of its first value: "
            f"{_listed(sorted(stalled, key=lambda t: t.learning_rate))}",
            f"raise the learning-rate range about 10x (search.space.learning_rate up to about {fmt(highest * 10)}); "
            "an LR range test finds where the loss starts to fall",
        )
    ]


def _overfit(trial: _Trial, curve: list[tuple[float, float]]) -> str | None:
    """Evidence that validation loss rose from its minimum while the training loss kept falling, else None."""
    if len(curve) < 3 or not trial.train:
        return None
    low_step, low = min(curve, key=lambda point: point[1])
    end_step, end = curve[-1]
    if low_step == end_step or low <= 0 or end < low * (1 + OVERFIT):
        return None
    train_then = [v for s, v in trial.train if s <= low_step]
    train_end = trial.train[-1][1] if trial.train else None
    if not train_then or train_end is None or train_end >= train_then[-1]:
        return None
    return (
        f"#{trial.record.number}: validation loss fell to {fmt(low)} at step {fmt(low_step)}, then rose to "
        f"{fmt(end)} at step {fmt(end_step)} while the training loss fell {fmt(train_then[-1])} -> {fmt(train_end)}"
    )


def _overfitting(run: _Run) -> list[Finding]:
    if not (run.summary.objective_direction == "minimize" and "loss" in run.summary.objective_metric):
        return []
    completed = [t for t in run.trials if t.record.state == "COMPLETE"]
    evidence = [e for t in completed if (e := _overfit(t, t.evals))]
    best = run.summary.best
    best_overfit = best is not None and any(e.startswith(f"#{best.number}:") for e in evidence)
    if not evidence or not (best_overfit or len(evidence) * 2 > len(completed)):
        return []
    return [
        Finding(
            "overfitting",
            3,
            "validation loss rising while training loss falls: overfitting",
            f"{len(evidence)} of {len(completed)} completed trials: " + "; ".join(evidence[:3]),
            "train fewer steps (search.budget.max_steps, or train.early_stopping_patience: 2), add dropout "
            "(train.lora_dropout 0.05-0.1) or weight decay (train.weight_decay 0.01-0.1), or add data",
        )
    ]


def _out_of_memory(run: _Run) -> list[Finding]:
    hit = [t for t in run.trials if t.record.error.startswith("OOM")]
    if not hit:
        return []
    return [
        Finding(
            "out_of_memory",
            3,
            "out of memory",
            f"{len(hit)} of {len(run.trials)} trials ran out of memory: "
            + "; ".join(f"#{t.record.number}: {t.record.error}" for t in hit[:3]),
            "halve train.per_device_train_batch_size and double gradient_accumulation_steps (or search.oom_retry: "
            "true), set train.gradient_checkpointing: true, or use model.method: qlora; `hpo-action plan` finds the "
            "largest micro-batch that fits on a CUDA GPU",
        )
    ]


def _spikes_or_nan(run: _Run) -> list[Finding]:
    hit = [t for t in run.trials if t.non_finite or t.spikes()]
    if not hit:
        return []
    parts = []
    for trial in hit[:3]:
        if trial.non_finite:
            parts.append(f"#{trial.record.number} (LR {fmt(trial.learning_rate)}): {trial.record.error[:80]}")
        else:
            step, before, after = trial.spikes()[0]
            parts.append(
                f"#{trial.record.number} (LR {fmt(trial.learning_rate)}): {fmt(before)} -> {fmt(after)} "
                f"at step {fmt(step)}"
            )
    return [
        Finding(
            "spikes_or_nan",
            2,
            "loss spikes or non-finite losses",
            f"{len(hit)} of {len(run.trials)} trials: " + "; ".join(parts),
            "lower the learning rate, clip gradients (train.max_grad_norm 0.3-1.0) and warm up "
            "(train.warmup_ratio 0.03-0.1)",
        )
    ]


def _pruned_everything(run: _Run) -> list[Finding]:
    """No trial ran its whole budget: there is no finished trial to evaluate, whatever rungs they stopped at."""
    pruned = [t.record for t in run.trials if t.record.state == "PRUNED"]
    if not pruned or any(t.record.state == "COMPLETE" for t in run.trials):
        return []
    stops = sorted({int(r.steps) for r in pruned if r.steps is not None})
    where = f"at step {stops[0]}" if len(stops) == 1 else f"at steps {', '.join(map(str, stops))}"
    return [
        Finding(
            "pruned_everything",
            3,
            "every trial was pruned: none ran its full budget",
            f"{len(pruned)} of {len(run.trials)} trials were pruned ({where} of {run.cfg.search.budget.max_steps}) "
            "and none completed, so there is no trial to evaluate or gate",
            "let some trials finish: search.pruner: none for this study's first trials (or a larger min_resource "
            "in search.pruner_options), then resume with --n-trials; a pruner ranks trials against finished ones",
        )
    ]


def _pruned_at_first_rung(run: _Run) -> list[Finding]:
    finished = [t.record for t in run.trials if t.record.state in ("COMPLETE", "PRUNED")]
    pruned = [r for r in finished if r.state == "PRUNED"]
    steps = [r.curve[0][0] for r in finished if r.curve]
    if not pruned or not steps or len(pruned) < FIRST_RUNG_SHARE * len(finished) or len(pruned) == len(finished):
        return []  # (every trial pruned: _pruned_everything says so)
    first = min(steps)
    if any(r.steps is None or r.steps > first for r in pruned):
        return []
    return [
        Finding(
            "pruned_at_first_rung",
            2,
            "the pruner stopped everything at its first rung",
            f"{len(pruned)} of {len(finished)} finished trials were pruned, every one at step {fmt(first)}, the "
            "first evaluation: the pruner ranked trials on their noisiest measurement",
            "evaluate later or prune later: raise search.budget.eval_every, or the pruner's min_resource "
            "(search.pruner_options), or use pruner median with n_warmup_steps",
        )
    ]


def _edge(value: Any, spec: ParamSpec) -> str | None:
    """'low' or 'high' when a value sits in the outer EDGE of its range (or is the end of numeric choices)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if spec.type == "categorical":
        numbers = [c for c in spec.choices or [] if isinstance(c, (int, float)) and not isinstance(c, bool)]
        if len(numbers) < 3 or len(numbers) != len(spec.choices or []) or value not in numbers:
            return None
        return "low" if value == min(numbers) else "high" if value == max(numbers) else None
    if spec.type not in ("float", "int") or spec.low is None or spec.high is None or spec.high <= spec.low:
        return None
    if not spec.low <= value <= spec.high:  # drawn under another range (or a default outside it): no edge of this one
        return None
    scale = math.log if spec.log else float
    position = (scale(float(value)) - scale(spec.low)) / (scale(spec.high) - scale(spec.low))
    return "low" if position <= EDGE else "high" if position >= 1 - EDGE else None


def _widened(spec: ParamSpec, side: str) -> Any:
    if spec.type == "categorical":
        numbers = sorted(spec.choices or [])
        return numbers[0] / 2 if side == "low" else numbers[-1] * 2
    assert spec.low is not None and spec.high is not None
    if spec.log:
        return spec.low / 3 if side == "low" else spec.high * 3
    width = (spec.high - spec.low) / 2
    value = spec.low - width if side == "low" else spec.high + width
    return round(value) if spec.type == "int" else value


def _best_at_edge(run: _Run) -> list[Finding]:
    best = run.summary.best
    completed = sum(1 for t in run.trials if t.record.state == "COMPLETE")
    if best is None or completed < EDGE_MIN_TRIALS:  # one or two trials have explored nothing yet
        return []
    findings = []
    for name, spec in run.cfg.active_space().items():
        side = _edge(best.params.get(name), spec) if name in best.params else None
        if side is None:
            continue
        wider = _widened(spec, side)
        try:
            TrainConfig.model_validate({name: type(best.params[name])(wider)})
        except (ValueError, TypeError):
            continue  # the range already ends where the parameter itself must end (dropout 0, warmup 0)
        key = "choices" if spec.type == "categorical" else ("low" if side == "low" else "high")
        findings.append(
            Finding(
                "best_at_edge",
                2,
                f"best trial at the {side} edge of {name}",
                f"best trial #{best.number} has {name} = {fmt(best.params[name])}, at the {side} end of "
                f"{_range_text(spec)}: the optimum may lie beyond it",
                f"widen the range: search.space.{name}.{key} to include about {fmt(wider)}",
            )
        )
    return findings


def _range_text(spec: ParamSpec) -> str:
    if spec.type == "categorical":
        return f"its choices {spec.choices}"
    return f"its range [{fmt(spec.low)}, {fmt(spec.high)}]{' (log)' if spec.log else ''}"


def _forgetting_blocks_promotion(run: _Run) -> list[Finding]:
    """The gate did not promote and a forgetting set did not pass: name the remedies, sized from the finalist."""
    if run.decision is None or run.decision.promote:
        return []
    blocking = [row for row in run.decision.forgetting if not row.passed]
    if not blocking:
        return []
    evidence = "; ".join(
        f"{row.name}: {row.metric} {fmt(row.reference)} (base) -> {fmt(row.candidate)}, change {row.delta:+.3g} "
        f"(one-sided {1 - run.decision.primary.alpha:.0%} lower bound {row.bound:+.3g} against the margin "
        f"-{row.margin:g}): {row.status}"
        for row in blocking
    )
    best = run.summary.best
    params = {**trial_defaults(run.cfg), **(best.params if best else {})}
    sets = {b.name: b for b in run.cfg.gate.forgetting}
    return [
        Finding(
            "forgetting_blocks_promotion",
            3 if any(row.status == "failed" for row in blocking) else 2,
            "forgetting blocks promotion",
            evidence,
            "; ".join(forgetting_remedies(run.cfg, params, [sets[row.name] for row in blocking if row.name in sets])),
        )
    ]


def _no_trial_within_margin(run: _Run) -> list[Finding]:
    """Every completed trial forgot beyond a margin on the probes, so the search has no finalist: nothing to gate, or
    (the Optuna backend) the closest to feasible was gated in its place."""
    completed = [t.record for t in run.trials if t.record.state == "COMPLETE"]
    fallback = run.summary.selection.fallback if run.summary.selection else None
    if (run.summary.best is not None and not fallback) or not completed or not all(r.forgetting for r in completed):
        return []
    if any(all(excess <= 0 for excess in r.forgetting.values()) for r in completed):
        return []
    least = min(completed, key=lambda r: max(_drop(r, name) for name in r.forgetting))
    margins = {b.name: b.margin for b in run.cfg.gate.forgetting}
    worst = ", ".join(
        f"{name} dropped {_drop(least, name):.3g} (margin {margins.get(name, 0):g}"
        f"{'' if _drop(least, name) > margins.get(name, 0) else ', not shown within it on the probe rows'})"
        for name, excess in least.forgetting.items()
        if excess > 0
    )
    sets = [b for b in run.cfg.gate.forgetting if least.forgetting.get(b.name, 0) > 0]
    params = {**trial_defaults(run.cfg), **least.params}
    return [
        Finding(
            "no_trial_within_margin",
            3,
            "every trial forgot beyond its margin"
            + (" at search: the closest was gated" if fallback else ": nothing to gate"),
            f"all {len(completed)} completed trials failed the gate's forgetting test on their probe rows; the one "
            f"that forgot least, #{least.number}: {worst}",
            "; ".join(
                forgetting_remedies(run.cfg, params, sets, "the trial that forgot least", dict(least.forgetting_drop))
            ),
        )
    ]


def _drop(record: Any, name: str) -> float:
    """A trial's drop on a set's probe against the base (recorded beside its constraint value after every probe)."""
    return float(record.forgetting_drop.get(name, 0.0))


def _test_too_small(run: _Run) -> list[Finding]:
    if run.decision is None:
        return []
    primary = run.decision.primary
    findings = []
    if primary.status == "inconclusive" and primary.needed_n and primary.needed_n > primary.n:
        findings.append(
            Finding(
                "test_too_small",
                2,
                "test set too small for the gate's target effect",
                f"n = {primary.n} test examples detect {primary.mde:+.3g} in {primary.metric} at {primary.power:.0%} "
                f"power; target_effect is {primary.target_effect:+g}",
                f"about {primary.needed_n} test examples are needed (data.test), or a larger gate.target_effect",
            )
        )
    for row in run.decision.forgetting:
        if row.status == "inconclusive" and row.needed_n and row.needed_n > row.n:
            findings.append(
                Finding(
                    "test_too_small",
                    2,
                    f"forgetting set {row.name} too small for its margin",
                    f"n = {row.n} examples cannot show {row.metric} within -{row.margin:g}",
                    f"about {row.needed_n} examples are needed, or a wider margin",
                )
            )
    return findings


def _too_few_trials(run: _Run) -> list[Finding]:
    searched = [name for name, spec in run.cfg.active_space().items() if spec.type != "fixed"]
    finished = sum(1 for t in run.trials if t.record.state in ("COMPLETE", "PRUNED"))
    per_parameter = starting_points().trials_per_parameter
    wanted = per_parameter * len(searched)
    if not searched or finished >= wanted:
        return []
    return [
        Finding(
            "too_few_trials",
            1,
            "too few trials for the parameters searched",
            f"{finished} finished trials for {len(searched)} searched parameters ({', '.join(searched)})",
            f"run at least {wanted} ({per_parameter} per parameter; search.n_trials, or --n-trials to add "
            "more on resume), or fix the parameters that matter least",
        )
    ]


def findings_table(findings: list[Finding]) -> TableModel:
    """The findings as one table: severity, what, evidence, remedy."""
    rows = tuple((_SEVERITY[f.severity], f.title, f.evidence, f.remedy) for f in findings)
    return TableModel("doctor", ("severity", "finding", "evidence", "try"), rows, left=4)
