"""The statistics of a promotion gate, as pure functions: one-sided paired tests and the bounds that invert them.

Every test asks one question, H0: δ ≤ δ0 against δ > δ0, where δ is the candidate's mean improvement over the
reference, and reports the one-sided lower confidence bound that inverts *that same test* at the same level:
`p_value < alpha` and `lower > delta0` agree by construction. The upper bound inverts the same family tested the
other way (H0: δ ≥ x), so "a gain of x is excluded" is a test too.

Every result is a frozen dataclass whose fields are never NaN or inf: a degenerate case (no disagreement, no
variance) gets a defined value and a `reason`. Randomness comes only from the `seed` argument. Leaf module: numpy,
scipy and the standard library only.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from scipy import optimize
from scipy import stats as sps

Alternative = Literal["greater", "two-sided", "less"]
McNemarMethod = Literal["midp", "exact", "chi2", "chi2_cc"]
ProportionMethod = Literal["midp", "exact", "tango"]
MeanMethod = Literal["permutation+bootstrap", "bootstrap", "permutation", "t"]
Scores = Sequence[bool] | Sequence[float] | np.ndarray

ALTERNATIVES = ("greater", "two-sided", "less")
PROPORTION_METHODS = ("midp", "exact", "tango")
MEAN_METHODS = ("permutation+bootstrap", "bootstrap", "permutation", "t")
# Indices drawn per chunk: bounded memory at any n, and small enough to stay in cache.
_CHUNK = 1 << 18
_NO_DISAGREEMENT = "no evidence: the models never disagree"
_EDGE = 1e-12  # keeps Tango's score away from δ = ±1, where it is 0/0


@dataclass(frozen=True)
class _Result:
    def __post_init__(self) -> None:
        """The JSON contract: a NaN or inf here is a bug in this module, so fail loudly rather than publish it."""
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise AssertionError(f"{type(self).__name__}.{f.name} is {value}")


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
        return McNemarResult(**common, statistic=0.0, p_value=1.0, reason=_NO_DISAGREEMENT)
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
    reason = _NO_DISAGREEMENT if b + c == 0 else None
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


def paired_mean_test(
    candidate: Scores,
    reference: Scores,
    delta0: float = 0.0,
    alpha: float = 0.05,
    method: MeanMethod = "permutation+bootstrap",
    resamples: int = 10_000,
    seed: int = 0,
) -> BoundedTest:
    """H0: mean(candidate − reference) ≤ delta0, with the bounds that invert the test.

    - permutation: sign flips of d − δ0 (exact under a symmetric null, e.g. exchangeable models).
    - bootstrap: two studentized bootstrap tests (bootstrap-t; Efron & Tibshirani 1993, §12.5), Hall's (1992)
      skewness-corrected one and a half-sample one, both required: skewed differences (the candidate's rare
      large losses) are where plain tests promote too often.
    - permutation+bootstrap (the default): all three required. Rejecting only when every component rejects is
      an intersection-union test (Berger 1982): still level alpha, and its bounds are the outermost ones.
    - t: Student's paired t.
    Each resampling component is inverted over the same draws, so p < alpha ⟺ lower > delta0 holds exactly.
    """
    _choose("method", method, MEAN_METHODS)
    _check_alpha(alpha)
    resamples = _check_resamples(resamples)
    cand, ref = _pair(candidate, reference)
    d = cand - ref
    n, estimate = len(d), float(np.mean(d))
    common = {"estimate": estimate, "delta0": float(delta0), "alpha": alpha, "method": method, "n": n}
    if np.ptp(d) == 0:  # no variance: the estimate is the only value the data allow
        p = 0.0 if estimate > delta0 else 1.0
        return BoundedTest(**common, p_value=p, lower=estimate, upper=estimate, reason=_constant(d))
    rng = np.random.default_rng(seed)
    parts: list[tuple[float, float, float]] = []
    if method == "t":
        parts.append(_t_test(d, delta0, alpha))
    if method in ("permutation", "permutation+bootstrap"):
        parts.append(_sign_flip_test(d, delta0, alpha, resamples, rng))
    if method in ("bootstrap", "permutation+bootstrap"):
        parts.extend(_studentized_tests(d, delta0, alpha, resamples, rng))
    p = max(part[0] for part in parts)
    low, high = _finite_range(d, delta0)
    lower = min(max(min(part[1] for part in parts), low), high)
    upper = min(max(max(part[2] for part in parts), low), high)
    return BoundedTest(**common, p_value=_prob(p), lower=lower, upper=upper)


def paired_mean_mde(n: int, sd: float, delta0: float = 0.0, alpha: float = 0.05, power: float = 0.8) -> float:
    """δ0 + (z_α + z_β)·sd/√n: the normal approximation of the effect a one-sided test detects with `power`."""
    _check_n(n)
    z_a, z_b = _z_pair(alpha, power)
    return delta0 + (z_a + z_b) * sd / math.sqrt(n)


def paired_mean_n(delta: float, sd: float, delta0: float = 0.0, alpha: float = 0.05, power: float = 0.8) -> int:
    """Pairs needed to detect δ > delta0 with `power`: ((z_α + z_β)·sd/(δ − δ0))²."""
    if not delta > delta0:
        raise ValueError(f"delta must exceed delta0={delta0}, got {delta}")
    z_a, z_b = _z_pair(alpha, power)
    return max(1, math.ceil(((z_a + z_b) * sd / (delta - delta0)) ** 2 - 1e-9))


def _t_test(d: np.ndarray, delta0: float, alpha: float) -> tuple[float, float, float]:
    """Student (1908): the quantities of scipy.stats.ttest_rel, and the one-sided t bounds."""
    n = len(d)
    mean, se = float(np.mean(d)), float(np.std(d, ddof=1)) / math.sqrt(n)
    quantile = float(sps.t.isf(alpha, n - 1))
    return float(sps.t.sf((mean - delta0) / se, n - 1)), mean - quantile * se, mean + quantile * se


def _allowed_exceedances(alpha: float, total: int, offset: int) -> int:
    """The largest count k with (offset + k)/total < alpha; −1 when even k = 0 is not below alpha."""
    return math.ceil(alpha * total - offset) - 1


def _sign_flip_test(
    d: np.ndarray, delta0: float, alpha: float, resamples: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Sign-flip test of mean(d) ≤ δ0, inverted exactly.

    Flipping the set F of d − δ0 gives a sum at least the observed one iff Σ_F (d_i − δ0) ≤ 0, i.e. iff δ0 ≥
    mean_F(d): each pattern has a threshold, and p(δ0) counts the thresholds at or below δ0. All 2^n patterns
    when they fit in `resamples`; otherwise `resamples` random ones with p = (1 + count)/(B + 1) (Phipson &
    Smyth 2010, "Permutation p-values should never be zero").
    """
    n = len(d)
    exact = 2**n <= resamples
    sums, sizes = [], []
    if exact:
        patterns = np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.float64)
        sums, sizes = [patterns @ d], [patterns.sum(axis=1)]
    else:
        rows = max(1, _CHUNK // n)
        for start in range(0, resamples, rows):
            bits = rng.integers(0, 2, size=(min(rows, resamples - start), n), dtype=np.uint8).astype(np.float64)
            sums.append(bits @ d)
            sizes.append(bits.sum(axis=1))
    total_sum, size = np.concatenate(sums), np.concatenate(sizes)
    with np.errstate(invalid="ignore", divide="ignore"):
        threshold = total_sum / size
    at_least = np.sort(np.where(size == 0, -np.inf, threshold))  # pattern counts for "greater" iff δ0 ≥ this
    at_most = np.sort(np.where(size == 0, np.inf, threshold))[::-1]  # pattern counts for "less" iff δ0 ≤ this
    total, offset = (len(size), 0) if exact else (len(size) + 1, 1)
    k = _allowed_exceedances(alpha, total, offset)
    p = (offset + int(np.count_nonzero(at_least <= delta0))) / total
    lower = float(at_least[k]) if k >= 0 else -math.inf
    upper = float(at_most[k]) if k >= 0 else math.inf
    return p, lower, upper


def _studentized_tests(
    d: np.ndarray, delta0: float, alpha: float, resamples: int, rng: np.random.Generator
) -> list[tuple[float, float, float]]:
    """Two studentized bootstrap tests of the mean, each inverted exactly (their statistics rise with the mean):

    - Hall's (1992) skewness-corrected bootstrap-t on full resamples: W = (mean − δ0)/s through
      g(W) = W + γW²/3 + γ²W³/27 + γ/(6n), γ the skewness, increasing in W; W* = (mean* − mean)/s* through
      the resample's own g. lower = mean − s·g⁻¹(critical value).
    - the bootstrap-t on half-size resamples (m = n/2; the m-out-of-n bootstrap of Bickel, Götze & van Zwet
      1997): √m·W* carries √2 times the skew of √n·W, a deliberate over-correction, because heavy tails make a
      sample's own skewness an underestimate of the truth (benchmarks/RESULTS.md: calibration).
    """
    n = len(d)
    mean, sd, skew = (float(v[0]) for v in _moments(d[None, :]))
    observed = (mean - delta0) / sd
    boot_mean, boot_sd, boot_skew = _bootstrap_moments(d, resamples, rng, n)
    hall_star = np.sort(_hall(_standardized(boot_mean, boot_sd, mean), np.where(boot_sd > 0, boot_skew, 0.0), n))
    half = max(2, n // 2)
    half_mean, half_sd, _ = _bootstrap_moments(d, resamples, rng, half)
    half_star = np.sort(math.sqrt(half) * _standardized(half_mean, half_sd, mean))
    k = _allowed_exceedances(alpha, resamples + 1, 1)
    results = []
    for t_star, t_obs, invert in (
        (hall_star, float(_hall(observed, skew, n)), lambda y: _hall_inverse(y, skew, n)),
        (half_star, math.sqrt(n) * observed, lambda y: y / math.sqrt(n)),
    ):
        p = (1 + int(np.count_nonzero(t_star >= t_obs))) / (resamples + 1)
        if k < 0:
            results.append((p, -math.inf, math.inf))
        else:  # the (k+1)-th largest and smallest resampled statistic are the critical values
            results.append((p, mean - sd * invert(float(t_star[-1 - k])), mean - sd * invert(float(t_star[k]))))
    return results


def _standardized(boot_mean: np.ndarray, boot_sd: np.ndarray, mean: float) -> np.ndarray:
    """(mean* − mean)/s*, with a constant resample (s* = 0) at ±1e6: finite, and beyond any critical value."""
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(boot_sd > 0, (boot_mean - mean) / boot_sd, np.sign(boot_mean - mean) * np.inf)
    return np.clip(np.nan_to_num(w, nan=0.0), -1e6, 1e6)


def _hall(w: np.ndarray | float, skew: np.ndarray | float, n: int) -> np.ndarray:
    return w + skew * w**2 / 3 + skew**2 * w**3 / 27 + skew / (6 * n)


def _hall_inverse(y: float, skew: float, n: int) -> float:
    """g⁻¹: since g(W) − γ/(6n) = ((1 + γW/3)³ − 1)/γ, W = (3/γ)·(∛(1 + γ·(y − γ/(6n))) − 1)."""
    shifted = y - skew / (6 * n)
    if abs(skew) < 1e-9:
        return shifted
    return 3.0 / skew * (float(np.cbrt(1.0 + skew * shifted)) - 1.0)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise mean, sample standard deviation (n − 1) and skewness m3/s³."""
    n = x.shape[1]
    mean = x.mean(axis=1)
    centered = x - mean[:, None]
    sd = np.sqrt((centered**2).sum(axis=1) / (n - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(sd > 0, (centered**3).mean(axis=1) / sd**3, 0.0)
    return mean, sd, skew


def _bootstrap_moments(
    d: np.ndarray, resamples: int, rng: np.random.Generator, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_moments` of `resamples` resamples of `size` values of d drawn with replacement.

    Each chunk of drawn indices becomes a matrix of counts, and counts @ [c, c², c³] (c = d − mean(d), centred
    against cancellation) gives every resample's power sums in one product: a few passes over memory instead of
    one per moment.
    """
    n = len(d)
    centre = float(d.mean())
    c = d - centre
    powers = np.stack([c, c * c, c * c * c], axis=1)
    rows = max(1, _CHUNK // size)
    sums = []
    for start in range(0, resamples, rows):
        k = min(rows, resamples - start)
        drawn = rng.integers(0, n, size=(k, size)) + np.arange(k)[:, None] * n
        counts = np.bincount(drawn.ravel(), minlength=k * n).reshape(k, n)
        sums.append(counts @ powers)
    s1, s2, s3 = np.concatenate(sums).T
    mean = s1 / size
    sd = np.sqrt(np.maximum(s2 - s1 * mean, 0.0) / (size - 1))
    third = s3 / size - 3 * mean * s2 / size + 2 * mean**3
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(sd > 0, third / sd**3, 0.0)
    return centre + mean, sd, skew


def _finite_range(d: np.ndarray, delta0: float) -> tuple[float, float]:
    """Where a bound is clamped when no value is significant (±inf): far outside the data and delta0."""
    span = max(float(np.ptp(d)), float(np.abs(d).max()), abs(delta0), 1e-12)
    return min(float(d.min()), delta0) - 10 * span, max(float(d.max()), delta0) + 10 * span


# --- shared checks ------------------------------------------------------------------------------------------------


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
