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

import json
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hpo_action.config import BOOLEAN_METRICS, GateConfig, metric_direction
from hpo_action.errors import GateError
from hpo_action.judge import stats
from hpo_action.judge.predictions import Rows, numeric_fields

Outcome = Literal["promote", "reject", "inconclusive"]
Status = Literal["passed", "failed", "inconclusive"]
# Below these, resampling and McNemar's test mean little: the decision cannot be promote (documented in README).
MIN_PAIRS = 10
MIN_DISCORDANT = 6
_PROPORTION_TESTS = {"mcnemar-midp": "midp", "mcnemar-exact": "exact", "tango": "tango"}


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


@dataclass(frozen=True)
class Table:
    """McNemar's 2×2 table of a boolean metric (candidate by reference)."""

    both: int
    candidate_only: int
    reference_only: int
    neither: int


@dataclass(frozen=True)
class PrimaryResult:
    """The test that the candidate improves on the reference by more than `min_effect`."""

    metric: str
    n: int
    candidate: float
    reference: float
    delta: float
    bound: float  # one-sided (1 − alpha) lower bound: the inversion of the test, so p < alpha ⟺ bound > min_effect
    upper_bound: float  # one-sided (1 − alpha) upper bound: reject when it is below target_effect
    ci: tuple[float, float]  # two-sided interval at `confidence`, for display only
    confidence: float
    test: str
    p_value: float
    alpha: float
    min_effect: float
    target_effect: float
    mde: float  # the effect this decision rule detects with `power` at this n
    power: float
    status: Outcome
    alternative: str = "greater"
    needed_n: int | None = None  # when inconclusive: the examples needed to detect target_effect with `power`
    table: Table | None = None
    note: str | None = None  # the statistics' own remark, e.g. "no evidence: the models never disagree"


@dataclass(frozen=True)
class ForgettingResult:
    """Non-inferiority of the candidate against the base model on one benchmark."""

    name: str
    metric: str
    n: int
    reference: float
    candidate: float
    delta: float
    bound: float  # one-sided (1 − alpha) lower bound: passed ⟺ bound > −margin
    upper_bound: float  # failed ⟺ upper_bound < −margin
    margin: float
    test: str
    p_value: float  # H0: the candidate is worse by the margin or more
    status: Status
    needed_n: int | None = None  # when inconclusive: examples that would show non-inferiority if nothing was lost
    note: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class GateSettings:
    """The settings the decision was made under, recorded in gate.json."""

    alpha: float
    min_effect: float
    target_effect: float
    power: float
    confidence: float
    resamples: int
    seed: int


@dataclass(frozen=True)
class Check:
    """One line of the verdict: the primary test or one forgetting set, with its outcome."""

    name: str
    status: str  # promote / reject / inconclusive for the primary test; passed / failed / inconclusive for a set
    text: str

    @property
    def ok(self) -> bool | None:
        """True when this check allows promotion, False when it rejects, None when it cannot tell yet."""
        return {"promote": True, "passed": True, "reject": False, "failed": False}.get(self.status)


@dataclass(frozen=True)
class GateDecision:
    """Everything gate.json holds; the terminal, the job summary, the card and the PR comment render this."""

    decision: Outcome
    reasons: tuple[str, ...]
    primary: PrimaryResult
    forgetting: tuple[ForgettingResult, ...]
    config: GateSettings

    @property
    def promote(self) -> bool:
        return self.decision == "promote"

    def checks(self) -> list[Check]:
        """Every check, the ones that decided first (the order of `reasons`)."""
        return _ordered_checks(self.decision, self.primary, self.forgetting)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["promote"] = self.promote
        for row, result in zip(data["forgetting"], self.forgetting, strict=True):
            row["passed"] = result.passed
            row["p_adjusted"] = result.p_value  # no multiplicity adjustment: an intersection-union test (README)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateDecision:
        primary = dict(data["primary"])
        primary["ci"] = tuple(primary["ci"])
        primary["table"] = _build(Table, primary["table"]) if primary.get("table") else None
        return cls(
            decision=data["decision"],
            reasons=tuple(data["reasons"]),
            primary=_build(PrimaryResult, primary),
            forgetting=tuple(_build(ForgettingResult, row) for row in data["forgetting"]),
            config=_build(GateSettings, data["config"]),
        )

    def write(self, path: str | Path) -> None:
        from hpo_action.files import write_text_atomic

        write_text_atomic(Path(path), json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> GateDecision:
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise GateError(f"{path}: not a gate.json this version can read ({type(err).__name__}: {err})") from None


def _build(kind: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in data.items() if k in names})


def choose_metric(candidate: Rows, reference: Rows, wanted: str | None, where: str, how: str) -> str:
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


def pair(candidate: Rows, reference: Rows, metric: str, names: tuple[str, str] = ("candidate", "reference")) -> Paired:
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
    boolean = metric in BOOLEAN_METRICS or all(isinstance(v, bool) for v in everything)
    for name in names:
        for key, value in zip(ids, values[name], strict=True):
            if boolean and not isinstance(value, bool):
                raise GateError(f"{name} predictions: id {key!r}: {metric} is boolean, got {value!r}")
            if not boolean and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
                raise GateError(f"{name} predictions: id {key!r}: {metric} must be a finite number, got {value!r}")
    return Paired(metric, [float(v) for v in values[names[0]]], [float(v) for v in values[names[1]]], boolean)


def default_test(boolean: bool, min_effect: float) -> str:
    """Mid-p McNemar for booleans (Tango's score test above a margin); for scores, the robust mean test."""
    if boolean:
        return "mcnemar-midp" if min_effect == 0 else "tango"
    return "permutation+bootstrap"


def _oriented(paired: Paired, direction: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Candidate and reference scores turned so that larger is better (booleans stay booleans)."""
    cand, ref = np.asarray(paired.candidate), np.asarray(paired.reference)
    if metric_direction(paired.metric, direction) == "maximize":
        return cand, ref
    return (1 - cand, 1 - ref) if paired.boolean else (-cand, -ref)


def primary_result(paired: Paired, cfg: GateConfig) -> PrimaryResult:
    """One one-sided test of H0: improvement ≤ min_effect, its bounds, and the power it has at this n."""
    better, worse = _oriented(paired, cfg.direction)
    n = len(better)
    test = cfg.test or default_test(paired.boolean, cfg.min_effect)
    display = (1 - cfg.confidence) / 2
    table = None
    if test in _PROPORTION_TESTS:
        if not paired.boolean:
            raise GateError(f"--test {test} needs a boolean metric; {paired.metric} is continuous")
        if cfg.target_effect >= 1:
            raise GateError(f"target_effect {cfg.target_effect} is beyond what a boolean metric can gain (< 1)")
        if test != "tango" and cfg.min_effect > 0:
            raise GateError(f"--test {test} tests no difference; with min_effect > 0 use tango (the default)")
        outcome = stats.paired_proportion_test(better, worse, cfg.min_effect, cfg.alpha, _PROPORTION_TESTS[test])
        b, c = int(np.sum(better > worse)), int(np.sum(better < worse))
        table = Table(int(np.sum((better == 1) & (worse == 1))), b, c, int(np.sum((better == 0) & (worse == 0))))
        ci = (stats.tango_bound(b, c, n, display, "lower"), stats.tango_bound(b, c, n, display, "upper"))
        discordance = (b + c) / n
        if test == "tango":  # Connor's normal approximation, generalized to the margin
            mde = stats.paired_proportion_mde(n, discordance, cfg.min_effect, cfg.alpha, cfg.power)
            needed = partial(
                stats.paired_proportion_n, cfg.target_effect, discordance, cfg.min_effect, cfg.alpha, cfg.power
            )
        else:  # the exact power of this very rule, minimum discordant count included
            mid = test == "mcnemar-midp"
            mde = stats.mcnemar_mde(n, discordance, cfg.alpha, cfg.power, mid, MIN_DISCORDANT)
            needed = partial(stats.mcnemar_n, cfg.target_effect, discordance, cfg.alpha, cfg.power, mid, MIN_DISCORDANT)
        short = (
            f"only {_pairs(b + c, 'discordant pair')} (promotion needs {MIN_DISCORDANT})"
            if b + c < MIN_DISCORDANT
            else None
        )
        can_reject = True  # Tango's unconditional bound stays valid with few disagreements
    else:
        settings = {"method": test, "resamples": cfg.resamples, "seed": cfg.seed}
        outcome = stats.paired_mean_test(better, worse, cfg.min_effect, cfg.alpha, **settings)
        shown = stats.paired_mean_test(better, worse, cfg.min_effect, display, **settings)
        ci = (shown.lower, shown.upper)
        sd = float(np.std(better - worse, ddof=1)) if n > 1 else 0.0
        mde = stats.paired_mean_mde(n, sd, cfg.min_effect, cfg.alpha, cfg.power)
        needed = partial(stats.paired_mean_n, cfg.target_effect, max(sd, 1e-12), cfg.min_effect, cfg.alpha, cfg.power)
        short = f"only {_pairs(n, 'pair')} (promotion needs {MIN_PAIRS})" if n < MIN_PAIRS else None
        can_reject = short is None
    if outcome.p_value < cfg.alpha and short is None:
        status: Outcome = "promote"
    elif can_reject and outcome.upper < cfg.target_effect:
        status = "reject"
    else:
        status = "inconclusive"
    return PrimaryResult(
        metric=paired.metric,
        n=n,
        candidate=float(np.mean(paired.candidate)),
        reference=float(np.mean(paired.reference)),
        delta=outcome.estimate,
        bound=outcome.lower,
        upper_bound=outcome.upper,
        ci=ci,
        confidence=cfg.confidence,
        test=test,
        p_value=outcome.p_value,
        alpha=cfg.alpha,
        min_effect=cfg.min_effect,
        target_effect=cfg.target_effect,
        mde=mde,
        power=cfg.power,
        status=status,
        needed_n=max(needed(), MIN_PAIRS) if status == "inconclusive" else None,
        table=table,
        note="; ".join(text for text in (short if status != "reject" else None, outcome.reason) if text) or None,
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


def forgetting_result(item: ForgettingInput, cfg: GateConfig) -> ForgettingResult:
    """Non-inferiority within the margin: passed, failed (significantly worse than the margin) or inconclusive."""
    paired, margin = item.paired, item.margin
    if not (np.isfinite(margin) and margin >= 0) or (paired.boolean and margin >= 1):
        raise GateError(f"forgetting {item.name}: margin must be a number in [0, 1) for booleans, ≥ 0 otherwise")
    better, worse = _oriented(paired, item.direction)
    n = len(better)
    if paired.boolean:
        test = "tango"
        outcome = stats.paired_proportion_test(better, worse, -margin, cfg.alpha, "tango")
        discordance = float(np.mean(better != worse))
        short = None
        needed = (
            max(
                stats.paired_proportion_n(0.0, discordance, -margin, cfg.alpha, cfg.power),
                stats.noninferiority_min_n(margin, cfg.alpha),
            )
            if margin > 0
            else None
        )
    else:
        test = default_test(False, 0.0)
        outcome = stats.paired_mean_test(better, worse, -margin, cfg.alpha, test, cfg.resamples, cfg.seed)
        sd = float(np.std(better - worse, ddof=1)) if n > 1 else 0.0
        short = f"only {_pairs(n, 'pair')} (a decision needs {MIN_PAIRS})" if n < MIN_PAIRS else None
        needed = stats.paired_mean_n(0.0, sd, -margin, cfg.alpha, cfg.power) if margin > 0 and sd else MIN_PAIRS
    if short is None and outcome.p_value < cfg.alpha:
        status: Status = "passed"
    elif short is None and outcome.upper < -margin:
        status = "failed"
    else:
        status = "inconclusive"
    return ForgettingResult(
        name=item.name,
        metric=paired.metric,
        n=n,
        reference=float(np.mean(paired.reference)),
        candidate=float(np.mean(paired.candidate)),
        delta=outcome.estimate,
        bound=outcome.lower,
        upper_bound=outcome.upper,
        margin=float(margin),
        test=test,
        p_value=outcome.p_value,
        status=status,
        needed_n=needed if status == "inconclusive" and needed else None,
        note=short or outcome.reason,
    )


def decide(primary: PrimaryResult, forgetting: list[ForgettingResult], cfg: GateConfig) -> GateDecision:
    """Reject on any significant failure; promote only when everything passed; otherwise inconclusive. The reason
    that decided comes first."""
    statuses = {row.status for row in forgetting}
    if "failed" in statuses or primary.status == "reject":
        decision: Outcome = "reject"
    elif primary.status == "promote" and statuses <= {"passed"}:
        decision = "promote"
    else:
        decision = "inconclusive"
    reasons = tuple(check.text for check in _ordered_checks(decision, primary, forgetting))
    settings = GateSettings(
        alpha=cfg.alpha,
        min_effect=cfg.min_effect,
        target_effect=cfg.target_effect,
        power=cfg.power,
        confidence=cfg.confidence,
        resamples=cfg.resamples,
        seed=cfg.seed,
    )
    return GateDecision(decision, reasons, primary, tuple(forgetting), settings)


def _ordered_checks(
    decision: Outcome, primary: PrimaryResult, forgetting: tuple[ForgettingResult, ...] | list[ForgettingResult]
) -> list[Check]:
    deciding = {"reject": {"reject", "failed"}, "inconclusive": {"inconclusive"}, "promote": {"promote", "passed"}}
    checks = [Check(primary.metric, primary.status, _primary_reason(primary))]
    checks += [Check(row.name, row.status, _forgetting_reason(row)) for row in forgetting]
    first = [check for check in checks if check.status in deciding[decision]]
    return first + [check for check in checks if check.status not in deciding[decision]]


def _primary_reason(p: PrimaryResult) -> str:
    note = f" ({p.note})" if p.note else ""
    lower = f"one-sided {1 - p.alpha:.0%} lower bound {p.bound:.4g}"
    if p.status == "promote":
        return (
            f"{p.metric}: better by {p.delta:+.4g}: {lower} > min_effect {p.min_effect:g} "
            f"({p.test}, p = {p.p_value:.3g} < {p.alpha:g})"
        )
    if p.status == "reject":
        worse = "significantly worse; " if p.upper_bound < 0 else ""
        return (
            f"{p.metric}: {worse}a gain of {p.target_effect:g} is ruled out: delta {p.delta:+.4g}, "
            f"upper bound {p.upper_bound:.4g} < target_effect {p.target_effect:g}{note}"
        )
    return (
        f"{p.metric}: not shown better: delta {p.delta:+.4g}, {lower}, p = {p.p_value:.3g}{note}; "
        f"n = {p.n} detects {p.mde:+.3g} at {p.power:.0%} power; about {p.needed_n} examples are needed "
        f"for {p.target_effect:+g}"
    )


def _forgetting_reason(row: ForgettingResult) -> str:
    change = f"{row.metric} {row.reference:.4g} -> {row.candidate:.4g}"
    if row.status == "passed":
        return f"{row.name}: kept: {change}, lower bound {row.bound:.4g} > -{row.margin:g}"
    if row.status == "failed":
        return (
            f"forgetting on {row.name}: {change}, worse by more than the margin {row.margin:g} "
            f"(upper bound {row.upper_bound:.4g} < -{row.margin:g})"
        )
    note = f" ({row.note})" if row.note else ""
    needed = f"; about {row.needed_n} examples would show it if nothing was forgotten" if row.needed_n else ""
    return (
        f"forgetting on {row.name}: cannot tell at n = {row.n} whether {row.metric} stayed within {row.margin:g}: "
        f"{change}, lower bound {row.bound:.4g}, p = {row.p_value:.3g}{note}{needed}"
    )


def gate(primary: Paired, forgetting: list[ForgettingInput], cfg: GateConfig) -> GateDecision:
    """The whole gate: the primary test, the forgetting table and the decision."""
    if not primary.candidate:
        raise GateError("no paired examples to gate")
    names = [item.name for item in forgetting]
    duplicate = next((name for name in names if names.count(name) > 1), None)
    if duplicate is not None:
        raise GateError(f"forgetting: the name {duplicate!r} is used twice; give each benchmark its own name")
    return decide(primary_result(primary, cfg), [forgetting_result(item, cfg) for item in forgetting], cfg)
