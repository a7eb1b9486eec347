"""What every test shares: result types that refuse NaN, input checks, and the constants of the JSON contract."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from scipy import stats as sps

Alternative = Literal["greater", "two-sided", "less"]
Scores = Sequence[bool] | Sequence[float] | np.ndarray
ALTERNATIVES = ("greater", "two-sided", "less")
NO_DISAGREEMENT = "no evidence: the models never disagree"


@dataclass(frozen=True)
class _Result:
    def __post_init__(self) -> None:
        """The JSON contract: a NaN or inf here is a bug in this module, so fail loudly rather than publish it."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise AssertionError(f"{type(self).__name__}.{f.name} is {value}")


@dataclass(frozen=True)
class BoundedTest(_Result):
    """A one-sided test of H0: δ ≤ delta0 with the level-alpha bounds that invert its family."""

    estimate: float  # the observed mean improvement
    delta0: float
    p_value: float  # H0: δ ≤ delta0 against δ > delta0
    lower: float  # one-sided (1 − alpha) lower bound: p_value < alpha ⟺ lower > delta0
    upper: float  # one-sided (1 − alpha) upper bound: H0: δ ≥ x is rejected at level alpha ⟺ upper < x
    alpha: float
    method: str
    n: int
    reason: str | None = None


def _z_pair(alpha: float, power: float) -> tuple[float, float]:
    _check_alpha(alpha)
    if not 0.5 <= power < 1:
        raise ValueError(f"power must lie in [0.5, 1), got {power}")
    return float(sps.norm.isf(alpha)), float(sps.norm.ppf(power))


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")


def _check_n(n: int) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")


def _choose(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_resamples(resamples: int) -> int:
    if int(resamples) != resamples or resamples < 1:
        raise ValueError(f"resamples must be a positive integer, got {resamples}")
    return int(resamples)


def _pair(candidate: Scores, reference: Scores) -> tuple[np.ndarray, np.ndarray]:
    """Both score vectors as finite float arrays of one equal length ≥ 1, or a ValueError that says what's wrong."""
    cand, ref = np.asarray(candidate, dtype=float), np.asarray(reference, dtype=float)
    if cand.ndim != 1 or ref.ndim != 1:
        raise ValueError(f"scores must be flat sequences, got shapes {cand.shape} and {ref.shape}")
    if len(cand) != len(ref):
        raise ValueError(f"candidate and reference must be paired: {len(cand)} vs {len(ref)} scores")
    if len(cand) == 0:
        raise ValueError("need at least one paired example, got none")
    for name, arr in (("candidate", cand), ("reference", ref)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"{name} score at index {bad[0]} is not a finite number: {arr[bad[0]]}")
    return cand, ref


def _bool_pair(candidate: Scores, reference: Scores) -> tuple[np.ndarray, np.ndarray]:
    cand, ref = _pair(candidate, reference)
    for name, arr in (("candidate", cand), ("reference", ref)):
        bad = np.flatnonzero((arr != 0) & (arr != 1))
        if bad.size:
            raise ValueError(f"{name} must be booleans (or 0/1); index {bad[0]} is {arr[bad[0]]}")
    return cand.astype(bool), ref.astype(bool)


def _constant(d: np.ndarray) -> str:
    return "no evidence: identical scores" if d[0] == 0 else f"no variance: every difference equals {d[0]:g}"


def _prob(p: float) -> float:
    """A p-value as a plain float in [0, 1], absorbing floating-point overshoot."""
    return min(1.0, max(0.0, float(p)))
