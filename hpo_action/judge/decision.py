"""The gate's typed result: what gate.json holds, and the checks the verdict lists (deciding one first).

Convention: `delta` and the bounds are *improvements*: candidate − reference for higher-is-better metrics,
reference − candidate for lower-is-better ones, so a positive number always favours the candidate.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from hpo_action.errors import GateError
from hpo_action.files import write_text_atomic

Outcome = Literal["promote", "reject", "inconclusive"]
# What "passed" means when several forgetting sets are tested (gate.json, the table and the card say it).
FORGETTING_RULE = (
    "promotion needs every set passed: an intersection-union test, so the decision keeps its level alpha with no "
    "correction; each set's 'passed' is its own level-alpha test, not a family-wise statement about all sets"
)
Status = Literal["passed", "failed", "inconclusive"]


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
    ci: tuple[float, float]  # (bound, upper_bound): the two-sided interval at `confidence` = 1 − 2·alpha they form
    confidence: float  # 1 − 2·alpha: never a level other than the test's
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
    estimand: str = ""  # what delta and the bounds estimate, in words (e.g. the clipped mean loss difference)
    power_rule: str = ""  # how the MDE and needed_n were computed, in words (the deciding test's own power)


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
    probe_rows: int = 0  # rows of the set held back for the search's probe, never tested here (n: the gate's rows)
    estimand: str = ""
    power_rule: str = ""  # how needed_n was computed, in words

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
    resamples: int
    seed: int
    decoding: dict[str, Any] | None = None  # the candidate's generation settings (decoding search), else greedy
    reference_decoding: dict[str, Any] | None = None  # the reference's: the candidate's for the base, a champion's own
    sequence: dict[str, Any] | None = None  # this gate's place in its registry's life (judge/sequence.SequenceLevel)


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
    adapter_sha256: str | None = None  # the weights this verdict is about; publish refuses any others
    test_fingerprint: str | None = None  # the test rows it was computed on (hpo_action.data.loading.rows_fingerprint)

    @property
    def promote(self) -> bool:
        return self.decision == "promote"

    def checks(self) -> list[Check]:
        """Every check, the ones that decided first (the order of `reasons`)."""
        return ordered_checks(self.decision, self.primary, self.forgetting)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["promote"] = self.promote
        for row, result in zip(data["forgetting"], self.forgetting, strict=True):
            row["passed"] = result.passed
            row["gate_rows"] = result.n
            row["p_adjusted"] = result.p_value  # no multiplicity adjustment: an intersection-union test (README)
        data["forgetting_rule"] = FORGETTING_RULE
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
            adapter_sha256=data.get("adapter_sha256"),
            test_fingerprint=data.get("test_fingerprint"),
        )

    def write(self, path: str | Path) -> None:
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


def ordered_checks(
    decision: Outcome, primary: PrimaryResult, forgetting: tuple[ForgettingResult, ...] | list[ForgettingResult]
) -> list[Check]:
    deciding = {"reject": {"reject", "failed"}, "inconclusive": {"inconclusive"}, "promote": {"promote", "passed"}}
    checks = [Check(primary.metric, primary.status, _primary_reason(primary))]
    checks += [Check(row.name, row.status, _forgetting_reason(row, primary.alpha)) for row in forgetting]
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
            f"one-sided {1 - p.alpha:.0%} upper bound {p.upper_bound:.4g} < target_effect {p.target_effect:g}{note}"
        )
    return (
        f"{p.metric}: not shown better: delta {p.delta:+.4g}, {lower}, p = {p.p_value:.3g}{note}; "
        f"n = {p.n} detects {p.mde:+.3g} at {p.power:.0%} power; about {p.needed_n} examples are needed "
        f"for {p.target_effect:+g}"
    )


def _forgetting_reason(row: ForgettingResult, alpha: float) -> str:
    change = f"{row.metric} {row.reference:.4g} -> {row.candidate:.4g}"
    level = f"one-sided {1 - alpha:.0%}"
    if row.status == "passed":
        return (
            f"{row.name}: passed (this set's own one-sided test): {change}, "
            f"{level} lower bound {row.bound:.4g} > -{row.margin:g}"
        )
    if row.status == "failed":
        return (
            f"forgetting on {row.name}: {change}, worse by more than the margin {row.margin:g} "
            f"({level} upper bound {row.upper_bound:.4g} < -{row.margin:g})"
        )
    note = f" ({row.note})" if row.note else ""
    needed = f"; about {row.needed_n} examples would show it if nothing was forgotten" if row.needed_n else ""
    return (
        f"forgetting on {row.name}: cannot tell at n = {row.n} whether {row.metric} stayed within {row.margin:g}: "
        f"{change}, {level} lower bound {row.bound:.4g}, p = {row.p_value:.3g}{note}{needed}"
    )
