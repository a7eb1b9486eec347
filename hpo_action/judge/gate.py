"""The promotion decision: one one-sided test per question, three outcomes, and a typed result.

Pure: predictions in, a `GateDecision` out (gate.json is its JSON). No torch here, so `hpo-action gate` starts
fast and can gate prediction files that came from anywhere.

- promote: the candidate's improvement is significantly above `min_effect` (the test's lower bound exceeds it)
  and every forgetting set is significantly within its margin;
- reject: the evidence excludes a worthwhile gain (the upper bound is below `target_effect`, e.g. a candidate
  that is significantly worse), or a forgetting set is significantly worse than its margin;
- inconclusive: neither; the reason says how many examples would settle it.

Convention: `delta` and the bounds are *improvements*: candidate − reference for higher-is-better metrics,
reference − candidate for lower-is-better ones, so a positive number always favours the candidate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from hpo_action.config import GateConfig
from hpo_action.errors import GateError
from hpo_action.judge import stats
from hpo_action.judge.decision import (
    ForgettingResult,
    GateDecision,
    GateSettings,
    Outcome,
    PrimaryResult,
    Status,
    Table,
    ordered_checks,
)
from hpo_action.judge.lm_eval_tasks import BINARY_METRICS
from hpo_action.judge.predictions import RecordsById, numeric_fields
from hpo_action.metrics import metric_direction, metric_kind

# Below these, resampling and McNemar's test mean little: the decision cannot be promote (documented in README).
MIN_PAIRS = 10
MIN_DISCORDANT = 6
# The vocabulary assumed when a predictions file does not record its tokenizer's (meta.json `vocab_size`): 2^18,
# above the vocabularies of common LLMs, so the clipping range [0, ln V] is wide enough for them.
FALLBACK_VOCAB_SIZE = 262_144
POWER_REPS = 400  # simulated data sets per power figure of the betting test (SE about 0.02 at power 0.8)
_PROPORTION_TESTS = {"mcnemar-midp": "midp", "mcnemar-exact": "exact", "tango": "tango"}
# How each test's MDE and needed_n are computed (gate.json `power_rule`): always the deciding test's own power.
_TANGO_POWER = "Connor's (1987) normal approximation of the paired-proportion test at the observed discordance"
_MCNEMAR_POWER = "the exact power of this McNemar rule at the observed discordance, minimum discordant count included"
_MEAN_POWER = "the normal formula at the observed standard deviation (no guarantee for heavy tails)"


@dataclass(frozen=True)
class Paired:
    """Scores of the same examples under two models, in the same order."""

    metric: str
    candidate: list[float]
    reference: list[float]
    boolean: bool


@dataclass(frozen=True)
class ForgettingInput:
    """One forgetting comparison: a benchmark scored for the candidate and for a reference model."""

    name: str
    paired: Paired
    margin: float
    direction: str | None = None


def choose_metric(candidate: RecordsById, reference: RecordsById, wanted: str | None, where: str, how: str) -> str:
    """The metric to gate on: `wanted` when both files have it, else the only numeric field both share; never a
    guess between several (exit 2 listing them, with `how` to choose)."""
    found = [name for name in numeric_fields(candidate) if name in numeric_fields(reference)]
    if wanted is not None:
        if wanted in found:
            return wanted
        listed = ", ".join(found) or "none"
        raise GateError(f"{where}: no numeric {wanted!r} in both files (numeric fields in both: {listed}); {how}")
    if len(found) == 1:
        return found[0]
    listed = ", ".join(found) or "none"
    raise GateError(f"{where}: cannot tell which metric to gate on (numeric fields in both: {listed}); {how}")


def pair(
    candidate: RecordsById, reference: RecordsById, metric: str, names: tuple[str, str] = ("candidate", "reference")
) -> Paired:
    """Pair two prediction sets by id; any id in one and not the other is an error naming it."""
    sides = {names[0]: candidate, names[1]: reference}
    for a, b in (names, names[::-1]):
        missing = next((key for key in sides[a] if key not in sides[b]), None)
        if missing is not None:
            raise GateError(f"id {missing!r} is in the {a} predictions but not in the {b} predictions")
    ids = sorted(candidate)
    values = {}
    for name, rows in zip(names, (candidate, reference), strict=True):
        column = []
        for key in ids:
            if metric not in rows[key]:
                raise GateError(f"{name} predictions: id {key!r} has no {metric!r} value")
            column.append(rows[key][metric])
        values[name] = column
    everything = values[names[0]] + values[names[1]]
    boolean = metric_kind(metric) == "boolean" or all(isinstance(v, bool) for v in everything)
    for name in names:
        for key, value in zip(ids, values[name], strict=True):
            if boolean and not isinstance(value, bool):
                raise GateError(f"{name} predictions: id {key!r}: {metric} is boolean, got {value!r}")
            if not boolean and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
                raise GateError(f"{name} predictions: id {key!r}: {metric} must be a finite number, got {value!r}")
    return Paired(metric, [float(v) for v in values[names[0]]], [float(v) for v in values[names[1]]], boolean)


def default_test(boolean: bool, min_effect: float) -> str:
    """Mid-p McNemar for booleans (Tango's score test above a margin); for scores, the betting test on their range."""
    if boolean:
        return "mcnemar-midp" if min_effect == 0 else "tango"
    return "betting"


@dataclass(frozen=True)
class ScoreRange:
    """The range every score of a metric lies in, which the betting test needs, and the estimand in words."""

    low: float
    high: float
    clip: bool  # values outside are clipped into the range (loss, perplexity), rather than refused
    estimand: str

    def oriented(self, maximize: bool) -> tuple[float, float]:
        """The range of the scores as `_oriented` turns them (negated for lower-is-better metrics)."""
        return (self.low, self.high) if maximize else (-self.high, -self.low)


def score_range(metric: str, cfg: GateConfig, vocab_size: int | None, primary: bool = True) -> ScoreRange:
    """The primary metric's: gate.score_range when set. Otherwise (and first for a forgetting set, whose metric may
    differ from the primary's) the documented clipping range for loss ([0, ln V]) and perplexity ([1, V]), V the
    tokenizer's vocabulary size (else FALLBACK_VOCAB_SIZE); else gate.score_range; else a GateError naming it."""
    if cfg.score_range is not None and (primary or metric not in ("loss", "perplexity")):
        low, high = cfg.score_range
        return ScoreRange(low, high, False, f"the mean difference in {metric} (scores in [{low:g}, {high:g}])")
    vocab = vocab_size or FALLBACK_VOCAB_SIZE
    source = f"V = {vocab}" + ("" if vocab_size else ", an assumed vocabulary size: the predictions do not say")
    if metric == "loss":
        top = math.log(vocab)
        text = f"the mean difference in per-example loss clipped to [0, ln V] = [0, {top:.4g}] ({source})"
        return ScoreRange(0.0, top, True, text)
    if metric == "perplexity":
        text = f"the mean difference in per-example perplexity clipped to [1, V] = [1, {vocab}] ({source})"
        return ScoreRange(1.0, float(vocab), True, text)
    if metric in BINARY_METRICS:  # an lm-eval accuracy written as numbers: each example's value is 0 or 1
        return ScoreRange(0.0, 1.0, False, f"the difference in mean {metric} (per-example values in [0, 1])")
    raise GateError(
        f"gate.score_range: the score test needs the range of {metric!r}'s per-example values; set "
        "gate.score_range: [LOW, HIGH] (hpo-action gate --score-range LOW HIGH), or choose another --test"
    )


def _in_range(paired: Paired, rng: ScoreRange, where: str) -> Paired:
    """The scores clipped into the range (loss, perplexity), or a GateError at the first one outside it."""
    if rng.clip:
        clip = partial(np.clip, a_min=rng.low, a_max=rng.high)
        return Paired(paired.metric, clip(paired.candidate).tolist(), clip(paired.reference).tolist(), False)
    for side, values in (("candidate", paired.candidate), ("reference", paired.reference)):
        bad = next((i for i, v in enumerate(values) if not rng.low <= v <= rng.high), None)
        if bad is not None:
            raise GateError(
                f"{where}: a {side} {paired.metric} of {values[bad]:g} lies outside gate.score_range "
                f"[{rng.low:g}, {rng.high:g}]; widen the range (--score-range) to one every score respects"
            )
    return paired


def _oriented(paired: Paired, direction: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate and reference scores turned so that larger is better (booleans stay booleans)."""
    cand, ref = np.asarray(paired.candidate), np.asarray(paired.reference)
    if metric_direction(paired.metric, direction) == "maximize":
        return cand, ref
    return (1 - cand, 1 - ref) if paired.boolean else (-cand, -ref)


@dataclass(frozen=True)
class _Measured:
    """One primary test's numbers, before the decision: the test and its power."""

    outcome: stats.BoundedTest
    mde: Callable[[], float]  # the smallest effect detected with `power` at this n; computed only when asked
    needed: Callable[[], int]  # examples to detect target_effect; computed only when inconclusive
    short: str | None  # why the sample is too small to promote on, if it is
    can_reject: bool
    power_rule: str
    table: Table | None = None


def _measure_proportions(better: np.ndarray, worse: np.ndarray, test: str, cfg: GateConfig) -> _Measured:
    if cfg.target_effect >= 1:
        raise GateError(f"target_effect {cfg.target_effect} is beyond what a boolean metric can gain (< 1)")
    if test != "tango" and cfg.min_effect > 0:
        raise GateError(f"--test {test} tests no difference; with min_effect > 0 use tango (the default)")
    n = len(better)
    outcome = stats.paired_proportion_test(better, worse, cfg.min_effect, cfg.alpha, _PROPORTION_TESTS[test])
    b, c = int(np.sum(better > worse)), int(np.sum(better < worse))
    table = Table(int(np.sum((better == 1) & (worse == 1))), b, c, int(np.sum((better == 0) & (worse == 0))))
    psi, target = (b + c) / n, cfg.target_effect
    if test == "tango":  # Connor's normal approximation, generalized to the margin
        mde = stats.paired_proportion_mde(n, psi, cfg.min_effect, cfg.alpha, cfg.power)
        needed = partial(stats.paired_proportion_n, target, psi, cfg.min_effect, cfg.alpha, cfg.power)
    else:  # the exact power of this very rule, minimum discordant count included
        mid = test == "mcnemar-midp"
        mde = stats.mcnemar_mde(n, psi, cfg.alpha, cfg.power, mid, MIN_DISCORDANT)
        needed = partial(stats.mcnemar_n, target, psi, cfg.alpha, cfg.power, mid, MIN_DISCORDANT)
    short = None
    if b + c < MIN_DISCORDANT:
        short = f"only {_pairs(b + c, 'discordant pair')} (promotion needs {MIN_DISCORDANT})"
    # Tango's unconditional bound stays valid with few disagreements, so rejecting is allowed.
    rule = _TANGO_POWER if test == "tango" else _MCNEMAR_POWER
    return _Measured(outcome, partial(float, mde), needed, short, can_reject=True, power_rule=rule, table=table)


def _measure_means(
    better: np.ndarray, worse: np.ndarray, test: str, cfg: GateConfig, bounds: tuple[float, float] | None
) -> _Measured:
    n = len(better)
    short = f"only {_pairs(n, 'pair')} (promotion needs {MIN_PAIRS})" if n < MIN_PAIRS else None
    if test == "betting":
        assert bounds is not None
        outcome = stats.betting_mean_test(better, worse, bounds, cfg.min_effect, cfg.alpha, seed=cfg.seed)
        d = better - worse
        settings = {"alpha": cfg.alpha, "power": cfg.power, "reps": POWER_REPS, "seed": cfg.seed}
        mde = partial(stats.betting_mde, d, n, bounds, cfg.min_effect, **settings)
        needed = partial(stats.betting_n, d, cfg.target_effect, bounds, cfg.min_effect, **settings)
        if short is None and stats.betting_max_evidence(n, bounds, cfg.min_effect, cfg.alpha) < 1 / cfg.alpha:
            short = f"{_pairs(n, 'pair')} cannot reach level {cfg.alpha:g}, even if all favour the candidate"
        return _Measured(outcome, mde, needed, short, can_reject=short is None, power_rule=stats.PLANNING_RULE)
    settings = {"method": test, "resamples": cfg.resamples, "seed": cfg.seed}
    outcome = stats.paired_mean_test(better, worse, cfg.min_effect, cfg.alpha, **settings)
    sd = float(np.std(better - worse, ddof=1)) if n > 1 else 0.0
    mde = partial(stats.paired_mean_mde, n, sd, cfg.min_effect, cfg.alpha, cfg.power)
    needed = partial(stats.paired_mean_n, cfg.target_effect, max(sd, 1e-12), cfg.min_effect, cfg.alpha, cfg.power)
    return _Measured(outcome, mde, needed, short, can_reject=short is None, power_rule=_MEAN_POWER)


def primary_result(
    paired: Paired, cfg: GateConfig, vocab_size: int | None = None, figures: bool = True
) -> PrimaryResult:
    """One one-sided test of H0: improvement ≤ min_effect, its bounds, and the power it has at this n (`figures`:
    the MDE and needed_n; a simulation of the decision alone turns them off, leaving NaN and None)."""
    test = cfg.test or default_test(paired.boolean, cfg.min_effect)
    if test in _PROPORTION_TESTS and not paired.boolean:
        raise GateError(f"--test {test} needs a boolean metric; {paired.metric} is continuous")
    if test == "betting" and paired.boolean:
        raise GateError(f"--test betting needs a continuous metric; {paired.metric} is boolean (use mcnemar-midp)")
    rng = score_range(paired.metric, cfg, vocab_size) if test == "betting" else None
    if rng is not None:
        paired = _in_range(paired, rng, "primary")
    better, worse = _oriented(paired, cfg.direction)
    if test in _PROPORTION_TESTS:
        m = _measure_proportions(better, worse, test, cfg)
    else:
        maximize = metric_direction(paired.metric, cfg.direction) == "maximize"
        m = _measure_means(better, worse, test, cfg, rng.oriented(maximize) if rng else None)
    outcome = m.outcome
    if outcome.p_value < cfg.alpha and m.short is None:
        status: Outcome = "promote"
    elif m.can_reject and outcome.upper < cfg.target_effect:
        status = "reject"
    else:
        status = "inconclusive"
    return PrimaryResult(
        metric=paired.metric,
        n=len(better),
        candidate=float(np.mean(paired.candidate)),
        reference=float(np.mean(paired.reference)),
        delta=outcome.estimate,
        bound=outcome.lower,
        upper_bound=outcome.upper,
        ci=(outcome.lower, outcome.upper),
        confidence=1 - 2 * cfg.alpha,
        estimand=rng.estimand if rng else _estimand(paired),
        test=test,
        p_value=outcome.p_value,
        alpha=cfg.alpha,
        min_effect=cfg.min_effect,
        target_effect=cfg.target_effect,
        mde=m.mde() if figures else math.nan,
        power=cfg.power,
        status=status,
        needed_n=max(m.needed(), MIN_PAIRS) if status == "inconclusive" and figures else None,
        table=m.table,
        power_rule=m.power_rule,
        note="; ".join(text for text in (m.short if status != "reject" else None, outcome.reason) if text) or None,
    )


def too_small_to_pass(name: str, n: int, margin: float, alpha: float) -> str | None:
    """A warning when a boolean forgetting set of n examples can never pass at its margin, even with no
    disagreement at all (Tango's score at −margin is then √(n·m/(1 − m))); None when it can."""
    if not 0 < margin < 1:
        return None if margin >= 1 else f"forgetting set {name!r}: margin 0 can never be passed; set a margin > 0"
    least = stats.noninferiority_min_n(margin, alpha)
    if n >= least:
        return None
    return (
        f"forgetting set {name!r} has {n} examples: at margin {margin:g} it can never pass (it needs at least "
        f"{least} even if the models never disagree); add examples or widen the margin"
    )


def _pairs(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def forgetting_result(
    item: ForgettingInput, cfg: GateConfig, vocab_size: int | None = None, figures: bool = True
) -> ForgettingResult:
    """Non-inferiority within the margin: passed, failed (significantly worse than the margin) or inconclusive."""
    paired, margin = item.paired, item.margin
    if not (np.isfinite(margin) and margin >= 0) or (paired.boolean and margin >= 1):
        raise GateError(f"forgetting {item.name}: margin must be a number in [0, 1) for booleans, ≥ 0 otherwise")
    rng = None if paired.boolean else score_range(paired.metric, cfg, vocab_size, primary=False)
    if rng is not None:
        paired = _in_range(paired, rng, f"forgetting {item.name}")
    better, worse = _oriented(paired, item.direction)
    if rng is None:
        m = _noninferior_booleans(better, worse, margin, cfg)
    else:
        bounds = rng.oriented(metric_direction(paired.metric, item.direction) == "maximize")
        if margin >= bounds[1] - bounds[0]:
            raise GateError(f"forgetting {item.name}: margin {margin:g} is wider than the range of {paired.metric}")
        m = _noninferior_scores(better, worse, margin, bounds, cfg)
    outcome = m.outcome
    if m.short is None and outcome.p_value < cfg.alpha:
        status: Status = "passed"
    elif m.short is None and outcome.upper < -margin:
        status = "failed"
    else:
        status = "inconclusive"
    return ForgettingResult(
        name=item.name,
        metric=paired.metric,
        n=len(better),
        reference=float(np.mean(paired.reference)),
        candidate=float(np.mean(paired.candidate)),
        delta=outcome.estimate,
        bound=outcome.lower,
        upper_bound=outcome.upper,
        margin=float(margin),
        test=m.test,
        p_value=outcome.p_value,
        status=status,
        needed_n=m.needed() if status == "inconclusive" and figures and margin > 0 else None,
        note=m.short or outcome.reason,
        estimand=rng.estimand if rng else _estimand(paired),
        power_rule=_TANGO_POWER if rng is None else stats.PLANNING_RULE,
    )


@dataclass(frozen=True)
class _NonInferior:
    """One forgetting set's test at −margin, before its status: the test, and the examples it would need."""

    test: str
    outcome: stats.BoundedTest
    short: str | None  # why the set is too small to decide on, if it is
    needed: Callable[[], int]  # examples that would show non-inferiority if nothing was lost (margin > 0)


def _noninferior_booleans(better: np.ndarray, worse: np.ndarray, margin: float, cfg: GateConfig) -> _NonInferior:
    outcome = stats.paired_proportion_test(better, worse, -margin, cfg.alpha, "tango")
    discordance = float(np.mean(better != worse))

    def needed() -> int:
        return max(
            stats.paired_proportion_n(0.0, discordance, -margin, cfg.alpha, cfg.power),
            stats.noninferiority_min_n(margin, cfg.alpha),
        )

    return _NonInferior("tango", outcome, None, needed)


def _noninferior_scores(
    better: np.ndarray, worse: np.ndarray, margin: float, bounds: tuple[float, float], cfg: GateConfig
) -> _NonInferior:
    n = len(better)
    outcome = stats.betting_mean_test(better, worse, bounds, -margin, cfg.alpha, seed=cfg.seed)
    short = f"only {_pairs(n, 'pair')} (a decision needs {MIN_PAIRS})" if n < MIN_PAIRS else None
    power = {"alpha": cfg.alpha, "power": cfg.power, "reps": POWER_REPS, "seed": cfg.seed}
    return _NonInferior(
        "betting", outcome, short, partial(stats.betting_n, better - worse, 0.0, bounds, -margin, **power)
    )


def _estimand(paired: Paired) -> str:
    """What a test without a range estimates, in words."""
    if paired.boolean:
        return f"the difference in the share of examples with {paired.metric} true (candidate minus reference)"
    return f"the mean per-example difference in {paired.metric}"


def decide(
    primary: PrimaryResult,
    forgetting: list[ForgettingResult],
    cfg: GateConfig,
    adapter_sha256: str | None = None,
    test_fingerprint: str | None = None,
) -> GateDecision:
    """Reject on any significant failure; promote only when everything passed; otherwise inconclusive. The reason
    that decided comes first."""
    statuses = {row.status for row in forgetting}
    if "failed" in statuses or primary.status == "reject":
        decision: Outcome = "reject"
    elif primary.status == "promote" and statuses <= {"passed"}:
        decision = "promote"
    else:
        decision = "inconclusive"
    reasons = tuple(check.text for check in ordered_checks(decision, primary, forgetting))
    settings = GateSettings(
        alpha=cfg.alpha,
        min_effect=cfg.min_effect,
        target_effect=cfg.target_effect,
        power=cfg.power,
        resamples=cfg.resamples,
        seed=cfg.seed,
    )
    return GateDecision(decision, reasons, primary, tuple(forgetting), settings, adapter_sha256, test_fingerprint)


def gate(
    primary: Paired,
    forgetting: list[ForgettingInput],
    cfg: GateConfig,
    adapter_sha256: str | None = None,
    test_fingerprint: str | None = None,
    vocab_size: int | None = None,
    figures: bool = True,
) -> GateDecision:
    """The whole gate: the primary test, the forgetting table and the decision, bound to the weights
    (`adapter_sha256`) and the test rows (`test_fingerprint`) it was computed for. `figures=False` skips the
    simulated power figures (MDE, needed_n), which never change the decision: for simulations of the gate."""
    if not primary.candidate:
        raise GateError("no paired examples to gate")
    names = [item.name for item in forgetting]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise GateError(f"forgetting: the name {duplicate!r} is used twice; give each benchmark its own name")
    rows = [forgetting_result(item, cfg, vocab_size, figures) for item in forgetting]
    return decide(primary_result(primary, cfg, vocab_size, figures), rows, cfg, adapter_sha256, test_fingerprint)
