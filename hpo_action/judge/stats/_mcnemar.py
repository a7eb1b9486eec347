"""McNemar's test on paired correctness: exact, mid-p and chi-square, one- or two-sided."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats as sps

from ._common import ALTERNATIVES, NO_DISAGREEMENT, Alternative, Scores, _bool_pair, _choose, _prob, _Result

McNemarMethod = Literal["midp", "exact", "chi2", "chi2_cc"]


@dataclass(frozen=True)
class McNemarResult(_Result):
    b: int  # candidate right, reference wrong
    c: int  # reference right, candidate wrong
    both: int
    neither: int
    n: int
    statistic: float  # b for exact/midp; chi-square (two-sided) or signed z (one-sided) for chi2/chi2_cc
    p_value: float
    method: str
    alternative: str
    reason: str | None = None


def mcnemar(
    candidate: Scores, reference: Scores, method: McNemarMethod = "midp", alternative: Alternative = "greater"
) -> McNemarResult:
    """McNemar's test on paired correctness; only the discordant pairs b and c carry evidence."""
    _choose("method", method, ("midp", "exact", "chi2", "chi2_cc"))
    _choose("alternative", alternative, ALTERNATIVES)
    cand, ref = _bool_pair(candidate, reference)
    b, c = int(np.sum(cand & ~ref)), int(np.sum(~cand & ref))
    both, n = int(np.sum(cand & ref)), len(cand)
    common = {"b": b, "c": c, "both": both, "neither": n - b - c - both, "n": n}
    common |= {"method": method, "alternative": alternative}
    m = b + c
    if m == 0:
        # statsmodels' corrected chi2 returns p = 0 here; with no discordant pair there is no evidence either way.
        return McNemarResult(**common, statistic=0.0, p_value=1.0, reason=NO_DISAGREEMENT)
    if method in ("exact", "midp"):
        statistic, p = float(b), _binomial_p(b, m, method == "midp", alternative)
    else:
        statistic, p = _chi2_p(b, c, method == "chi2_cc", alternative)
    return McNemarResult(**common, statistic=statistic, p_value=_prob(p))


def _binomial_p(b: int, m: int, mid: bool, alternative: str) -> float:
    """Exact conditional test, b ~ Bin(b + c, 1/2) under H0 (McNemar 1947), or its mid-p version.

    Mid-p: Fagerland, Lydersen & Laake (2013), "The McNemar test for binary matched-pairs data: mid-p and
    asymptotic are better than exact conditional", BMC Med Res Methodol 13:91, eq. (2) and its supplement:
    one-sided = exact tail − P(B = b)/2; two-sided = exact two-sided − P(B = min(b, c)), and 1 − P(B = b)/2
    when b = c.
    """
    half_point = 0.5 * sps.binom.pmf(b, m, 0.5) if mid else 0.0
    upper, lower = sps.binom.sf(b - 1, m, 0.5), sps.binom.cdf(b, m, 0.5)
    if alternative == "greater":
        return upper - half_point
    if alternative == "less":
        return lower - half_point
    if 2 * b == m:
        return 1.0 - half_point
    return min(1.0, 2.0 * (min(upper, lower) - half_point))


def _chi2_p(b: int, c: int, corrected: bool, alternative: str) -> tuple[float, float]:
    """McNemar (1947) chi-square (b − c)²/(b + c); with Edwards' (1948) correction (|b − c| − 1)²/(b + c).

    One-sided tests use the normal approximation of the same binomial tail the exact test sums:
    z = (b − c ∓ 1)/sqrt(b + c) with the correction, so 2·min one-sided p equals the two-sided chi-square p.
    """
    m, diff = b + c, b - c
    cc = 1.0 if corrected else 0.0
    if alternative == "two-sided":
        statistic = max(abs(diff) - cc, 0.0) ** 2 / m
        return statistic, float(sps.chi2.sf(statistic, 1))
    if alternative == "greater":
        z = (diff - cc) / math.sqrt(m)
        return z, float(sps.norm.sf(z))
    z = (diff + cc) / math.sqrt(m)
    return z, float(sps.norm.cdf(z))


# --- paired proportions: δ = p10 − p01 ---------------------------------------------------------------------------
