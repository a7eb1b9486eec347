"""Paired proportions, δ = p10 − p01: McNemar's bound, Tango's score test with a margin, and power."""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
from scipy import optimize
from scipy import stats as sps

from ._common import NO_DISAGREEMENT, BoundedTest, Scores, _bool_pair, _check_alpha, _check_n, _choose, _prob, _z_pair
from ._mcnemar import _binomial_p

ProportionMethod = Literal["midp", "exact", "tango"]
PROPORTION_METHODS = ("midp", "exact", "tango")
_EDGE = 1e-12  # keeps Tango's score away from δ = ±1, where it is 0/0


def paired_proportion_test(
    candidate: Scores,
    reference: Scores,
    delta0: float = 0.0,
    alpha: float = 0.05,
    method: ProportionMethod = "midp",
) -> BoundedTest:
    """H0: δ ≤ delta0 for paired booleans, δ = P(candidate right, reference wrong) − P(the reverse).

    midp / exact: McNemar's conditional test (delta0 must be 0); its lower bound inverts the same binomial test,
    θ_L the mid-p (or Clopper-Pearson) lower limit of θ = b/(b + c), so δ_L = (b + c)/n · (2θ_L − 1).
    tango: Tango's (1998) unconditional score test, for any delta0, inverted for the bound. The upper bound is
    Tango's for every method: unconditional, so a handful of disagreements does not pass for a precise zero.
    """
    _choose("method", method, PROPORTION_METHODS)
    _check_alpha(alpha)
    cand, ref = _bool_pair(candidate, reference)
    b, c, n = int(np.sum(cand & ~ref)), int(np.sum(~cand & ref)), len(cand)
    if not -1 < delta0 < 1:
        raise ValueError(f"delta0 for paired proportions must lie in (-1, 1), got {delta0}")
    upper = tango_bound(b, c, n, alpha, "upper")
    reason = NO_DISAGREEMENT if b + c == 0 else None
    if method == "tango":
        p, lower = float(sps.norm.sf(_tango_score(b, c, n, delta0))), tango_bound(b, c, n, alpha, "lower")
    else:
        if delta0 != 0:
            raise ValueError("McNemar's test is of delta0 = 0; use method 'tango' for a margin")
        m = b + c
        p = 1.0 if m == 0 else _binomial_p(b, m, method == "midp", "greater")
        lower = 0.0 if m == 0 else m / n * (2.0 * _binomial_lower_limit(b, m, alpha, method == "midp") - 1.0)
    return BoundedTest(
        estimate=(b - c) / n,
        delta0=float(delta0),
        p_value=_prob(p),
        lower=lower,
        upper=upper,
        alpha=alpha,
        method=method,
        n=n,
        reason=reason,
    )


def _binomial_lower_limit(b: int, m: int, alpha: float, mid: bool) -> float:
    """The θ at which the one-sided (mid-)p-value of b successes in m is exactly alpha; 0 when b = 0.

    Exact: Clopper & Pearson (1934), the alpha quantile of Beta(b, m − b + 1). Mid-p: Lancaster (1961), the root
    of P_θ(B > b) + P_θ(B = b)/2 = alpha, which rises monotonically in θ.
    """
    if b == 0:
        return 0.0
    if not mid:
        return float(sps.beta.ppf(alpha, b, m - b + 1))

    def excess(theta: float) -> float:
        return float(sps.binom.sf(b, m, theta) + 0.5 * sps.binom.pmf(b, m, theta) - alpha)

    return float(optimize.brentq(excess, 0.0, 1.0, xtol=1e-14))


def _tango_score(b: int, c: int, n: int, d0: float) -> float:
    """Tango (1998), Stat Med 17:891–908: score statistic of H0: δ = d0, decreasing in d0.

    Z(d0) = (b − c − n·d0) / √(n·(2q̃ + d0(1 − d0))), q̃ the restricted MLE of p01,
    q̃ = [√(W² + 8n·c·d0(1 − d0)) − W]/(4n), W = −b − c + (2n − b + c)·d0.
    """
    w = -b - c + (2 * n - b + c) * d0
    q = (math.sqrt(max(w * w + 8 * n * c * d0 * (1 - d0), 0.0)) - w) / (4 * n)
    num, var = b - c - n * d0, n * (2 * q + d0 * (1 - d0))
    if var > 0:
        return num / math.sqrt(var)
    return math.copysign(math.inf, num) if num else 0.0


def tango_bound(b: int, c: int, n: int, alpha: float, side: Literal["lower", "upper"]) -> float:
    """One-sided level-alpha bound of δ = p10 − p01 by inverting Tango's score test; within [−1, 1]."""
    z = float(sps.norm.isf(alpha))
    estimate = (b - c) / n
    if side == "lower":
        if estimate <= -1 + _EDGE or _tango_score(b, c, n, -1 + _EDGE) <= z:
            return -1.0
        return float(optimize.brentq(lambda d0: _tango_score(b, c, n, d0) - z, -1 + _EDGE, estimate, xtol=1e-13))
    if estimate >= 1 - _EDGE or _tango_score(b, c, n, 1 - _EDGE) >= -z:
        return 1.0
    return float(optimize.brentq(lambda d0: _tango_score(b, c, n, d0) + z, estimate, 1 - _EDGE, xtol=1e-13))


def paired_proportion_mde(
    n: int, discordance: float, delta0: float = 0.0, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest δ that n pairs detect with `power` by a one-sided level-alpha test of H0: δ ≤ delta0.

    Connor (1987), Biometrics 43, generalized to a margin: √n·(δ − δ0) = z_α·√(ψ − δ0²) + z_β·√(ψ − δ²), with
    ψ = p10 + p01 the discordance. A true δ needs ψ ≥ δ, so ψ is taken as max(observed ψ, δ): few observed
    disagreements do not make a large effect look detectable. Not clamped; 1.0 when nothing is detectable.
    """
    _check_n(n)
    z_a, z_b = _z_pair(alpha, power)

    def shortfall(delta: float) -> float:
        psi = max(discordance, delta)
        return (
            math.sqrt(n) * (delta - delta0)
            - z_a * math.sqrt(max(psi - delta0**2, 0.0))
            - z_b * math.sqrt(max(psi - delta**2, 0.0))
        )

    grid = np.linspace(delta0, 1.0, 401)[1:]
    values = [shortfall(d) for d in grid]
    first = next((i for i, v in enumerate(values) if v >= 0), None)
    if first is None:
        return 1.0
    high = float(grid[first])
    if values[first] == 0:
        return high
    low = delta0 if first == 0 else float(grid[first - 1])
    return float(optimize.brentq(shortfall, low, high, xtol=1e-12))


def paired_proportion_n(
    delta: float, discordance: float, delta0: float = 0.0, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Pairs needed to detect δ > delta0 with `power` (Connor 1987, with a margin; ψ = max(discordance, δ))."""
    if not delta0 < delta <= 1:
        raise ValueError(f"delta must lie in (delta0={delta0}, 1], got {delta}")
    z_a, z_b = _z_pair(alpha, power)
    psi = max(discordance, delta)
    root_n = (z_a * math.sqrt(max(psi - delta0**2, 0.0)) + z_b * math.sqrt(max(psi - delta**2, 0.0))) / (delta - delta0)
    return max(1, math.ceil(root_n**2 - 1e-9))  # the tolerance keeps an exact integer from rounding up


def mcnemar_power(
    n: int, gain: float, loss: float, alpha: float = 0.05, mid: bool = True, min_discordant: int = 0
) -> float:
    """Exact power of the rule "one-sided (mid-p) McNemar p < alpha and b + c ≥ min_discordant" when the candidate
    alone is right with probability `gain` and the reference alone with `loss`: the discordant count M is
    Bin(n, gain + loss), and given M = m, b is Bin(m, gain/(gain + loss)); the power sums P(M = m)·P(b ≥ b_c(m)).
    """
    _check_n(n)
    psi = gain + loss
    if psi <= 0:
        return 0.0
    m = np.arange(n + 1)
    critical = _mcnemar_critical(n, alpha, mid)
    tail = sps.binom.sf(critical - 1, m, gain / psi)
    tail[m < max(min_discordant, 1)] = 0.0
    return float(np.sum(sps.binom.pmf(m, n, psi) * tail))


@functools.lru_cache(maxsize=64)
def _mcnemar_critical(n: int, alpha: float, mid: bool) -> np.ndarray:
    """For each discordant count m = 0..n, the smallest b whose one-sided (mid-)p is below alpha (m + 1 when none);
    cached, since a power search evaluates many effects at one n."""
    m = np.arange(n + 1)
    guess = np.floor(m / 2 + sps.norm.isf(alpha) * np.sqrt(m) / 2).astype(int)
    window = np.arange(-8, 9)
    b = np.clip(guess[:, None] + window[None, :], 0, m[:, None] + 1)
    p = sps.binom.sf(b - 1, m[:, None], 0.5) - (0.5 * sps.binom.pmf(b, m[:, None], 0.5) if mid else 0.0)
    below = p < alpha
    first = np.where(below.any(axis=1), b[np.arange(len(m)), below.argmax(axis=1)], m + 1)
    outside = below[:, 0] & (b[:, 0] > 0)  # the window started too high: search downwards by hand
    for i in np.flatnonzero(outside):
        k = int(first[i])
        while k > 0 and _binomial_p(k - 1, int(m[i]), mid, "greater") < alpha:
            k -= 1
        first[i] = k
    above = ~below.any(axis=1) & (b[:, -1] <= m)  # the window ended too low: search upwards by hand
    for i in np.flatnonzero(above):
        k = int(b[i, -1]) + 1
        while k <= m[i] and _binomial_p(k, int(m[i]), mid, "greater") >= alpha:
            k += 1
        first[i] = k
    first.setflags(write=False)
    return first


def mcnemar_mde(
    n: int, discordance: float, alpha: float = 0.05, power: float = 0.8, mid: bool = True, min_discordant: int = 0
) -> float:
    """The δ = gain − loss at which the McNemar rule has exactly `power` (by `mcnemar_power`, bisected), with the
    discordance max(observed, δ) since a true δ needs ψ ≥ δ; 1.0 when nothing is detectable."""
    _z_pair(alpha, power)

    def power_at(delta: float) -> float:
        psi = max(discordance, delta)
        return mcnemar_power(n, (psi + delta) / 2, (psi - delta) / 2, alpha, mid, min_discordant)

    if power_at(1.0) < power:
        return 1.0
    low, high = 0.0, 1.0
    while high - low > 1e-5:
        middle = (low + high) / 2
        low, high = (middle, high) if power_at(middle) < power else (low, middle)
    return high


def mcnemar_n(
    delta: float, discordance: float, alpha: float = 0.05, power: float = 0.8, mid: bool = True, min_discordant: int = 0
) -> int:
    """The fewest pairs at which the McNemar rule detects δ with `power` (exact power; Connor's n as the start)."""
    psi = max(discordance, delta)
    gain, loss = (psi + delta) / 2, (psi - delta) / 2
    n = paired_proportion_n(delta, discordance, 0.0, alpha, power)
    while mcnemar_power(n, gain, loss, alpha, mid, min_discordant) < power:
        n = math.ceil(n * 1.05) + 1
    low = max(1, math.floor(n / 1.25))
    while low < n:  # the smallest n above which the power stays reached, up to the test's discreteness
        middle = (low + n) // 2
        low, n = (
            (middle + 1, n) if mcnemar_power(middle, gain, loss, alpha, mid, min_discordant) < power else (low, middle)
        )
    return n


def noninferiority_min_n(margin: float, alpha: float = 0.05) -> int:
    """The fewest boolean pairs that can pass non-inferiority at `margin` at all: with zero disagreement, Tango's
    score at −margin is √(n·m/(1 − m)), which must exceed z_α."""
    if not 0 < margin < 1:
        raise ValueError(f"margin must lie in (0, 1) for a boolean metric, got {margin}")
    z = float(sps.norm.isf(alpha))
    return math.floor(z * z * (1 - margin) / margin) + 1


# --- paired means -------------------------------------------------------------------------------------------------
