"""The promotion decision: a significant improvement on the primary metric, and no forgetting.

Pure: predictions in, `gate.json` out. No torch here, so `hpo-action gate` starts fast and can gate
prediction files that came from anywhere.

Convention: `delta`, `ci` and `bound` are *improvements*: candidate − reference for higher-is-better
metrics, reference − candidate for lower-is-better ones, so a positive number always favours the candidate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import stats
from .config import BOOLEAN_METRICS, GateConfig, metric_direction
from .errors import GateError


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


def read_predictions(path: str | Path) -> dict[str, dict[str, Any]]:
    """A predictions JSONL keyed by id; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise GateError(f"{path}: predictions file not found")
    rows: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise GateError(f"{path} line {number}: not valid JSON: {err.msg}") from None
        if not isinstance(row, dict) or "id" not in row:
            raise GateError(f"{path} line {number}: each line must be an object with an 'id'")
        key = str(row["id"])
        if key in rows:
            raise GateError(f"{path} line {number}: duplicate id {key!r}")
        rows[key] = row
    if not rows:
        raise GateError(f"{path}: no predictions (the file is empty)")
    return rows


def default_metric(rows: dict[str, dict[str, Any]]) -> str:
    """The first scored field of the first row: what `evaluate` listed first."""
    first = next(iter(rows.values()))
    names = [k for k, v in first.items() if k not in ("id", "output") and isinstance(v, (bool, int, float))]
    if not names:
        raise GateError("predictions have no metric field besides 'id' and 'output'")
    return names[0]


def pair(
    candidate: dict[str, dict[str, Any]],
    reference: dict[str, dict[str, Any]],
    metric: str,
    names: tuple[str, str] = ("candidate", "reference"),
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
    boolean = metric in BOOLEAN_METRICS or all(isinstance(v, bool) for v in everything)
    for name in names:
        for key, value in zip(ids, values[name], strict=True):
            if boolean and not isinstance(value, bool):
                raise GateError(f"{name} predictions: id {key!r}: {metric} is boolean, got {value!r}")
            if not boolean and (isinstance(value, bool) or not isinstance(value, (int, float)) or value != value):
                raise GateError(f"{name} predictions: id {key!r}: {metric} must be a finite number, got {value!r}")
    return Paired(metric, [float(v) for v in values[names[0]]], [float(v) for v in values[names[1]]], boolean)


def default_test(boolean: bool) -> str:
    return "mcnemar-midp" if boolean else "permutation"


def primary_result(paired: Paired, cfg: GateConfig) -> dict[str, Any]:
    """The one-sided test that the candidate is better, with its CI and minimum detectable effect."""
    import numpy as np
    from scipy.stats import norm

    sign = 1.0 if metric_direction(paired.metric, cfg.direction) == "maximize" else -1.0
    cand, ref = np.asarray(paired.candidate), np.asarray(paired.reference)
    better, worse = sign * cand, sign * ref  # oriented: larger is better
    n = len(cand)
    test = cfg.test or default_test(paired.boolean)
    if test.startswith("mcnemar") and not paired.boolean:
        raise GateError(f"--test {test} needs a boolean metric; {paired.metric} is continuous")
    ci = stats.paired_bootstrap_ci(better, worse, confidence=cfg.confidence, resamples=cfg.resamples, seed=cfg.seed)
    result: dict[str, Any] = {
        "metric": paired.metric,
        "n": n,
        "candidate": float(cand.mean()),
        "reference": float(ref.mean()),
        "delta": float((better - worse).mean()),
        "ci": [ci.low, ci.high],
        "confidence": cfg.confidence,
        "test": test,
        "alternative": "greater",
    }
    reason = None
    if test.startswith("mcnemar"):
        if sign < 0:  # a boolean where lower is better: swap so the test still asks "candidate better?"
            better, worse = 1 - cand, 1 - ref
        outcome = stats.mcnemar(better.astype(bool), worse.astype(bool), method=test.removeprefix("mcnemar-"))
        p_value, reason = outcome.p_value, outcome.reason
        table = {
            "both": outcome.both,
            "candidate_only": outcome.b,
            "reference_only": outcome.c,
            "neither": outcome.neither,
        }
        mde = stats.mcnemar_mde(n, (outcome.b + outcome.c) / n, cfg.alpha, cfg.power, "greater")
    else:
        if test == "permutation":
            outcome = stats.paired_permutation_test(better, worse, "greater", cfg.resamples, cfg.seed)
        elif test == "t":
            outcome = stats.paired_t(better, worse, "greater", cfg.confidence)
        else:  # bootstrap: the share of resampled mean improvements at or below zero (margin 0)
            outcome = stats.noninferiority(
                better, worse, 0.0, confidence=cfg.confidence, resamples=cfg.resamples, seed=cfg.seed, kind="continuous"
            )
        p_value, reason, table = outcome.p_value, outcome.reason, None
        spread = float(np.std(better - worse, ddof=1)) if n > 1 else 0.0
        mde = float((norm.ppf(1 - cfg.alpha) + norm.ppf(cfg.power)) * spread / np.sqrt(n))
    result.update({"p_value": p_value, "alpha": cfg.alpha, "mde": mde})
    if table is not None:
        result["table"] = table
    if reason:
        result["reason"] = reason
    return result


def forgetting_rows(inputs: list[ForgettingInput], cfg: GateConfig) -> list[dict[str, Any]]:
    """Non-inferiority of the candidate on each benchmark, Holm-adjusted across all of them."""
    rows = []
    for item in inputs:
        paired = item.paired
        higher = metric_direction(paired.metric, item.direction) == "maximize"
        outcome = stats.noninferiority(
            paired.candidate,
            paired.reference,
            item.margin,
            higher_is_better=higher,
            confidence=1 - cfg.alpha,
            resamples=cfg.resamples,
            seed=cfg.seed,
            kind="bool" if paired.boolean else "continuous",
        )
        rows.append(
            {
                "name": item.name,
                "metric": paired.metric,
                "reference": outcome.reference,
                "candidate": outcome.candidate,
                "delta": outcome.delta,
                "bound": outcome.bound,
                "margin": item.margin,
                "p_value": outcome.p_value,
            }
        )
    for row, adjusted in zip(rows, stats.holm([r["p_value"] for r in rows]), strict=True):
        row["p_adjusted"] = adjusted
        row["passed"] = adjusted < cfg.alpha
    return rows


def decide(primary: dict[str, Any], forgetting: list[dict[str, Any]], cfg: GateConfig) -> dict[str, Any]:
    """Promote only on p < alpha, CI lower bound > min_effect, and every forgetting benchmark passed."""
    reasons: list[str] = []
    primary = dict(primary)
    evidence = primary.pop("reason", None)  # e.g. "no evidence: the models never disagree"
    significant = primary["p_value"] < cfg.alpha
    large_enough = primary["ci"][0] > cfg.min_effect
    metric = primary["metric"]
    if significant and large_enough:
        decision = "promote"
        reasons.append(
            f"{metric}: improvement {primary['delta']:+.4g} (CI [{primary['ci'][0]:.4g}, {primary['ci'][1]:.4g}]), "
            f"p = {primary['p_value']:.3g} < {cfg.alpha}"
        )
    elif not significant and primary["mde"] > cfg.target_effect:
        decision = "inconclusive"
        reasons.append(
            f"{metric}: not significant (p = {primary['p_value']:.3g}) and at n = {primary['n']} the smallest effect "
            f"this test detects with {cfg.power:.0%} power is {primary['mde']:.3g} > target {cfg.target_effect}: "
            "add test examples"
        )
    else:
        decision = "reject"
        if not significant:
            why = evidence or f"p = {primary['p_value']:.3g} ≥ alpha {cfg.alpha}"
            reasons.append(f"{metric}: no significant improvement ({why}; delta {primary['delta']:+.4g})")
        else:
            reasons.append(
                f"{metric}: CI lower bound {primary['ci'][0]:.4g} does not exceed min_effect {cfg.min_effect}"
            )
    for row in forgetting:
        if not row["passed"]:
            decision = "reject"
            reasons.append(
                f"forgetting on {row['name']}: {row['metric']} {row['reference']:.4g} → {row['candidate']:.4g} "
                f"(bound {row['bound']:.4g} vs margin −{row['margin']:g}, adjusted p = {row['p_adjusted']:.3g})"
            )
    return {
        "decision": decision,
        "promote": decision == "promote",
        "reasons": reasons,
        "primary": primary,
        "forgetting": forgetting,
        "config": {"alpha": cfg.alpha, "resamples": cfg.resamples, "seed": cfg.seed},
    }


def gate(primary: Paired, forgetting: list[ForgettingInput], cfg: GateConfig) -> dict[str, Any]:
    """The whole gate: primary test, forgetting table, decision — the content of gate.json."""
    if not primary.candidate:
        raise GateError("no paired examples to gate")
    return decide(primary_result(primary, cfg), forgetting_rows(forgetting, cfg), cfg)


def write_gate(result: dict[str, Any], path: str | Path) -> None:
    from .artifacts import write_text_atomic

    write_text_atomic(Path(path), json.dumps(result, indent=2, allow_nan=False) + "\n")
