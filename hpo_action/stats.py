"""The statistics of a promotion gate: paired tests, intervals, multiplicity and power, as pure functions.

Every function takes the candidate's and the reference's per-example scores, paired by position, and returns a
frozen dataclass that `dataclasses.asdict` turns into JSON. No output field is ever NaN or inf: a degenerate case
(no disagreement, no variance, n = 1) gets a defined value and a `reason` that says why. Randomness comes only
from the `seed` argument. Leaf module: numpy, scipy and the standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
from scipy import optimize
from scipy import stats as sps

Alternative = Literal["greater", "two-sided", "less"]
McNemarMethod = Literal["midp", "exact", "chi2", "chi2_cc"]
BootstrapMethod = Literal["percentile", "bca"]
Statistic = Literal["mean", "median"]
Scores = Sequence[bool] | Sequence[float] | np.ndarray

_ALTERNATIVES = ("greater", "two-sided", "less")
# Indices drawn per chunk: bounded memory at any n, and small enough to stay in cache (measured fastest).
_CHUNK = 1 << 18
_NO_DISAGREEMENT = "no evidence: the models never disagree"
_IDENTICAL = "no evidence: identical scores"


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
class BootstrapResult(_Result):
    delta: float
    low: float
    high: float
    confidence: float
    method: str  # the method actually used: "percentile" when BCa degenerates
    resamples: int
    statistic: str
    reason: str | None = None


@dataclass(frozen=True)
class PermutationResult(_Result):
    delta: float
    p_value: float
    exact: bool
    resamples: int  # sign patterns counted: 2^m when exact (m = nonzero differences), else the random draws
    alternative: str
    reason: str | None = None


@dataclass(frozen=True)
class TTestResult(_Result):
    delta: float
    statistic: float
    df: int
    p_value: float
    low: float  # two-sided interval at `confidence` whatever the alternative: a one-sided one has an infinite end
    high: float
    confidence: float
    alternative: str
    reason: str | None = None


@dataclass(frozen=True)
class NonInferiorityResult(_Result):
    reference: float
    candidate: float
    delta: float  # oriented so that positive means the candidate is better
    bound: float  # one-sided lower confidence bound of delta
    margin: float
    p_value: float  # one-sided, H0: delta <= -margin
    passed: bool
    confidence: float
    method: str
    reason: str | None = None


def mcnemar(
    candidate: Scores, reference: Scores, method: McNemarMethod = "midp", alternative: Alternative = "greater"
) -> McNemarResult:
    """McNemar's test on paired correctness; only the discordant pairs b and c carry evidence."""
    _choose("method", method, ("midp", "exact", "chi2", "chi2_cc"))
    _choose("alternative", alternative, _ALTERNATIVES)
    cand, ref = _bool_pair(candidate, reference)
    b, c = int(np.sum(cand & ~ref)), int(np.sum(~cand & ref))
    both, n = int(np.sum(cand & ref)), len(cand)
    table = {"b": b, "c": c, "both": both, "neither": n - b - c - both, "n": n}
    common = {**table, "method": method, "alternative": alternative}
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
    z = (b − c ∓ 1)/sqrt(b + c) with the correction (the continuity-corrected P(B ≥ b), P(B ≤ b)), so
    2·min one-sided p equals the two-sided chi-square p. The correction is clamped at 0 so that b = c gives p = 1.
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


def paired_bootstrap_ci(
    candidate: Scores,
    reference: Scores,
    statistic: Statistic = "mean",
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
    method: BootstrapMethod = "percentile",
) -> BootstrapResult:
    """Bootstrap interval of statistic(candidate − reference), resampling pairs so the pairing's correlation stays."""
    _choose("statistic", statistic, ("mean", "median"))
    _choose("method", method, ("percentile", "bca"))
    _check_open01("confidence", confidence)
    resamples = _check_resamples(resamples)
    d = _differences(candidate, reference)
    estimate = float(np.mean(d) if statistic == "mean" else np.median(d))
    common = {"delta": estimate, "confidence": confidence, "resamples": resamples, "statistic": statistic}
    if np.ptp(d) == 0:
        reason = _constant(d)
        if method == "bca":
            reason += "; BCa is undefined, so the percentile interval (a point) is reported"
        return BootstrapResult(**common, low=estimate, high=estimate, method="percentile", reason=reason)
    boot = _bootstrap(d, statistic, resamples, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0
    levels, reason = (tail, 1.0 - tail), None
    if method == "bca":
        levels, reason = _bca_levels(d, statistic, estimate, boot, tail)
    low, high = np.quantile(boot, levels)
    used = "bca" if method == "bca" and reason is None else "percentile"
    return BootstrapResult(**common, low=float(low), high=float(high), method=used, reason=reason)


def _bootstrap(d: np.ndarray, statistic: str, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The statistic of `resamples` resamples of d with replacement, drawn in chunks of at most ~_CHUNK indices."""
    n = len(d)
    rows = max(1, _CHUNK // n)
    out = np.empty(resamples)
    for start in range(0, resamples, rows):
        k = min(rows, resamples - start)
        sample = np.take(d, rng.integers(0, n, size=(k, n)))
        out[start : start + k] = sample.sum(axis=1) / n if statistic == "mean" else np.median(sample, axis=1)
    return out


def _bca_levels(
    d: np.ndarray, statistic: str, estimate: float, boot: np.ndarray, tail: float
) -> tuple[tuple[float, float], str | None]:
    """BCa quantile levels (Efron 1987; Efron & Tibshirani 1993, §14.3, eqs. 14.10, 14.14, 14.15).

    z0 = Φ⁻¹(share of bootstrap statistics below the estimate, ties counted half);
    a = Σ(θ̄ − θᵢ)³ / (6·[Σ(θ̄ − θᵢ)²]^{3/2}) over the jackknife values θᵢ;
    level = Φ(z0 + (z0 + z)/(1 − a·(z0 + z))). Returns the percentile levels and a reason when this degenerates.
    """

    def degenerate(why: str) -> tuple[tuple[float, float], str]:
        return (tail, 1.0 - tail), f"BCa degenerated ({why}); fell back to the percentile interval"

    share = (np.count_nonzero(boot < estimate) + np.count_nonzero(boot <= estimate)) / (2 * len(boot))
    if share in (0.0, 1.0):
        return degenerate("every bootstrap statistic lies on one side of the estimate")
    jack = _jackknife(d, statistic)
    if jack is None or np.ptp(jack) == 0:
        return degenerate("the jackknife values are all equal, so the acceleration is 0/0")
    dev = jack.mean() - jack
    z0 = sps.norm.ppf(share)
    accel = np.sum(dev**3) / (6.0 * np.sum(dev**2) ** 1.5)
    levels = []
    for z in (sps.norm.ppf(tail), sps.norm.ppf(1.0 - tail)):
        denom = 1.0 - accel * (z0 + z)
        if denom <= 0:
            return degenerate("the acceleration makes the level map non-monotone")
        levels.append(float(sps.norm.cdf(z0 + (z0 + z) / denom)))
    return (levels[0], levels[1]), None


def _jackknife(d: np.ndarray, statistic: str) -> np.ndarray | None:
    """Leave-one-out statistics in O(n log n); None when n = 1 leaves nothing to compute them on."""
    n = len(d)
    if n == 1:
        return None
    if statistic == "mean":
        return (d.sum() - d) / (n - 1)
    # Removing sorted position j shifts every later order statistic down by one: r_k = s_k if k < j else s_{k+1}.
    s, j = np.sort(d), np.arange(n)

    def remaining(k: int) -> np.ndarray:
        return np.where(k < j, s[k], s[k + 1])

    half = (n - 1) // 2
    return remaining(half) if (n - 1) % 2 else (remaining(half - 1) + remaining(half)) / 2.0


def paired_permutation_test(
    candidate: Scores, reference: Scores, alternative: Alternative = "greater", resamples: int = 10_000, seed: int = 0
) -> PermutationResult:
    """Sign-flip test of mean(candidate − reference): under H0 each pair's labels are exchangeable.

    Zero differences do not change the statistic under a flip, so the null distribution is that of the m nonzero
    differences. Exact (all 2^m sign patterns) when 2^m ≤ resamples; otherwise `resamples` random patterns with
    p = (k + 1)/(N + 1) (Phipson & Smyth 2010, "Permutation p-values should never be zero", SAGMB 9(1)).
    """
    _choose("alternative", alternative, _ALTERNATIVES)
    resamples = _check_resamples(resamples)
    d = _differences(candidate, reference)
    delta = float(np.mean(d))
    x = d[d != 0]
    m = len(x)
    if m == 0:
        return PermutationResult(
            delta=delta, p_value=1.0, exact=True, resamples=1, alternative=alternative, reason=_IDENTICAL
        )
    observed = float(x.sum())
    # Patterns that tie the observed sum must count; allow the rounding error of a length-m sum.
    tol = 8.0 * m * np.finfo(float).eps * float(np.abs(x).sum())
    if 2**m <= resamples:
        total, exact = 2**m, True
        p = _exact_count(x, observed, tol, alternative) / total
    else:
        total, exact = resamples, False
        p = (_random_count(x, observed, tol, alternative, total, seed) + 1) / (total + 1)
    return PermutationResult(delta=delta, p_value=_prob(p), exact=exact, resamples=total, alternative=alternative)


def _signed_sums(x: np.ndarray) -> np.ndarray:
    """Σ sᵢxᵢ for all 2^len(x) sign vectors s (bit i of the pattern number set means sᵢ = −1)."""
    bits = (np.arange(2 ** len(x))[:, None] >> np.arange(len(x))) & 1
    return (1.0 - 2.0 * bits) @ x


def _exact_count(x: np.ndarray, observed: float, tol: float, alternative: str) -> int:
    """Patterns at least as extreme as observed, by meeting in the middle: O(2^{m/2} log) time and memory."""
    half = len(x) // 2
    low, high = np.sort(_signed_sums(x[:half])), _signed_sums(x[half:])

    def at_least(t: float) -> int:
        return int(np.sum(len(low) - np.searchsorted(low, t - tol - high, side="left")))

    def at_most(t: float) -> int:
        return int(np.sum(np.searchsorted(low, t + tol - high, side="right")))

    if alternative == "greater":
        return at_least(observed)
    if alternative == "less":
        return at_most(observed)
    if abs(observed) <= tol:
        return 2 ** len(x)
    return at_least(abs(observed)) + at_most(-abs(observed))


def _random_count(x: np.ndarray, observed: float, tol: float, alternative: str, resamples: int, seed: int) -> int:
    """Random sign patterns at least as extreme as observed; flipped sum = 2·Σ_{kept} x − Σx, in chunks."""
    rng = np.random.default_rng(seed)
    m, total = len(x), float(x.sum())
    rows = max(1, _CHUNK // m)
    count = 0
    for start in range(0, resamples, rows):
        k = min(rows, resamples - start)
        bits = np.unpackbits(rng.integers(0, 256, size=(k, (m + 7) // 8), dtype=np.uint8), axis=1, count=m)
        sums = 2.0 * (bits.astype(np.float64) @ x) - total
        if alternative == "greater":
            count += int(np.count_nonzero(sums >= observed - tol))
        elif alternative == "less":
            count += int(np.count_nonzero(sums <= observed + tol))
        else:
            count += int(np.count_nonzero(np.abs(sums) >= abs(observed) - tol))
    return count


def paired_t(
    candidate: Scores, reference: Scores, alternative: Alternative = "greater", confidence: float = 0.95
) -> TTestResult:
    """Paired (one-sample on differences) Student t-test and its two-sided t interval.

    With no variance the t statistic is 0/0 or ±∞ and rests on no estimate of noise, so the test is not run:
    statistic 0, p = 1, the interval the single value, and a reason. A gate then never promotes on it.
    """
    _choose("alternative", alternative, _ALTERNATIVES)
    _check_open01("confidence", confidence)
    d = _differences(candidate, reference)
    n, delta = len(d), float(np.mean(d))
    common = {"delta": delta, "df": n - 1, "confidence": confidence, "alternative": alternative}
    if n == 1 or np.ptp(d) == 0:
        reason = "n = 1: no degrees of freedom to estimate the variance" if n == 1 else _constant(d)
        return TTestResult(**common, statistic=0.0, p_value=1.0, low=delta, high=delta, reason=reason)
    se = float(np.std(d, ddof=1)) / math.sqrt(n)
    t = delta / se
    dist = sps.t(n - 1)
    # Student (1908); the same quantities as scipy.stats.ttest_rel.
    p = {"greater": dist.sf(t), "less": dist.cdf(t), "two-sided": 2.0 * dist.sf(abs(t))}[alternative]
    half_width = float(dist.ppf(0.5 + confidence / 2.0)) * se
    return TTestResult(**common, statistic=t, p_value=_prob(p), low=delta - half_width, high=delta + half_width)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values, in input order: max over j ≤ i of min(1, (m − j)·p_(j))."""
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be a flat sequence, got shape {p.shape}")
    if p.size and not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p_values must lie in [0, 1], got {p[~((p >= 0) & (p <= 1))][0]}")
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order]))
    adjusted = np.empty_like(p)
    adjusted[order] = stepped
    return [float(v) for v in adjusted]


def mcnemar_sample_size(
    delta: float, discordance: float, alpha: float = 0.05, power: float = 0.8, alternative: Alternative = "greater"
) -> int:
    """Pairs needed for McNemar's test to detect δ = p10 − p01 given ψ = p10 + p01 (Connor 1987, Biometrics 43).

    n = [z_α·√ψ + z_β·√(ψ − δ²)]² / δ², with z_α one-sided, or z_{α/2} for a two-sided test.
    """
    _choose("alternative", alternative, _ALTERNATIVES)
    if not 0 < discordance <= 1:
        raise ValueError(f"discordance (p10 + p01) must lie in (0, 1], got {discordance}")
    if not 0 < abs(delta) <= discordance:
        raise ValueError(f"|delta| must lie in (0, discordance={discordance}], got {delta}")
    z_a, z_b = _z_pair(alpha, power, alternative)
    n = (z_a * math.sqrt(discordance) + z_b * math.sqrt(discordance - delta**2)) ** 2 / delta**2
    return max(1, math.ceil(n - 1e-9))  # the tolerance keeps an exact integer from rounding up by float noise


def mcnemar_mde(
    n: int, discordance: float, alpha: float = 0.05, power: float = 0.8, alternative: Alternative = "greater"
) -> float:
    """Smallest δ that Connor's (1987) formula says n pairs detect: the formula solved for δ, clamped to [0, ψ].

    Squaring √n·δ = z_α√ψ + z_β√(ψ − δ²) gives (n + z_β²)δ² − 2z_α√(nψ)δ + ψ(z_α² − z_β²) = 0, whose larger root
    is δ = √ψ·[z_α√n + z_β√(n − z_α² + z_β²)]/(n + z_β²). With ψ = 0 (the models never disagreed) the formula is
    0/0; we use the smallest observable discordance, ψ = 1/n, so the answer stays finite and conservative.
    """
    _choose("alternative", alternative, _ALTERNATIVES)
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if not 0 <= discordance <= 1:
        raise ValueError(f"discordance (p10 + p01) must lie in [0, 1], got {discordance}")
    psi = max(discordance, 1.0 / n)
    z_a, z_b = _z_pair(alpha, power, alternative)
    disc = n - z_a**2 + z_b**2
    if disc < 0:
        return psi
    mde = math.sqrt(psi) * (z_a * math.sqrt(n) + z_b * math.sqrt(disc)) / (n + z_b**2)
    return min(max(mde, 0.0), psi)


def _z_pair(alpha: float, power: float, alternative: str) -> tuple[float, float]:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    if not 0.5 <= power < 1:
        raise ValueError(f"power must lie in [0.5, 1), got {power}")
    tail = alpha / 2 if alternative == "two-sided" else alpha
    return float(sps.norm.isf(tail)), float(sps.norm.ppf(power))


def noninferiority(
    candidate: Scores,
    reference: Scores,
    margin: float,
    higher_is_better: bool = True,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
    kind: Literal["bool", "continuous"] = "bool",
) -> NonInferiorityResult:
    """One-sided test that the candidate is at most `margin` worse than the reference (H0: delta ≤ −margin).

    bool: Tango's (1998) score test and score interval for paired proportions, which stay defined when b or c is 0
    (the Wald interval collapses there). continuous: the paired bootstrap of the mean difference, lower bound the
    (1 − confidence) percentile and p = (#{θ* ≤ −margin} + 1)/(B + 1).
    """
    _choose("kind", kind, ("bool", "continuous"))
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must lie in (0.5, 1) for a one-sided bound, got {confidence}")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number ≥ 0, got {margin}")
    if kind == "bool" and margin >= 1:
        raise ValueError(f"margin for a boolean metric must be < 1 (a difference of proportions), got {margin}")
    cand, ref = _bool_pair(candidate, reference) if kind == "bool" else _pair(candidate, reference)
    sign = 1.0 if higher_is_better else -1.0
    if kind == "bool":
        hi, lo = (cand, ref) if higher_is_better else (ref, cand)
        bound, p, reason = _tango(int(np.sum(hi & ~lo)), int(np.sum(~hi & lo)), len(hi), margin, confidence)
        method = "tango-score"
    else:
        resamples = _check_resamples(resamples)
        d = sign * (cand - ref)
        boot = _bootstrap(d, "mean", resamples, np.random.default_rng(seed))
        bound = float(np.quantile(boot, 1.0 - confidence))
        p = (np.count_nonzero(boot <= -margin) + 1) / (resamples + 1)
        reason, method = (_IDENTICAL if not d.any() else None), "bootstrap-percentile"
    means = {"reference": float(np.mean(ref)), "candidate": float(np.mean(cand))}
    delta = sign * (means["candidate"] - means["reference"])
    return NonInferiorityResult(
        **means,
        delta=delta,
        bound=bound,
        margin=float(margin),
        p_value=_prob(p),
        passed=bound > -margin,
        confidence=confidence,
        method=method,
        reason=reason,
    )


def _tango(b: int, c: int, n: int, margin: float, confidence: float) -> tuple[float, float, str | None]:
    """Tango (1998), Stat Med 17:891–908: score test of H0: δ = δ0 for δ = p10 − p01, inverted for the bound.

    Z(δ0) = (b − c − nδ0) / √(n·(2q̃ + δ0(1 − δ0))) with q̃ the restricted MLE of p01,
    q̃ = [√(W² + 8n·c·δ0(1 − δ0)) − W]/(4n), W = −b − c + (2n − b + c)·δ0.
    """

    def score(d0: float) -> float:
        w = -b - c + (2 * n - b + c) * d0
        q = (math.sqrt(max(w * w + 8 * n * c * d0 * (1 - d0), 0.0)) - w) / (4 * n)
        num, var = b - c - n * d0, n * (2 * q + d0 * (1 - d0))
        if var > 0:
            return num / math.sqrt(var)
        return math.copysign(math.inf, num) if num else 0.0

    z = float(sps.norm.ppf(confidence))
    estimate = (b - c) / n
    floor = -1.0 + 1e-12
    if estimate <= floor or score(floor) <= z:
        bound = -1.0
    else:
        bound = float(optimize.brentq(lambda d0: score(d0) - z, floor, estimate, xtol=1e-12))
    if b + c == 0 and margin == 0:
        return bound, 1.0, _NO_DISAGREEMENT
    return bound, float(sps.norm.sf(score(-margin))), None


def _choose(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_open01(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")


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


def _differences(candidate: Scores, reference: Scores) -> np.ndarray:
    cand, ref = _pair(candidate, reference)
    return cand - ref


def _constant(d: np.ndarray) -> str:
    return _IDENTICAL if d[0] == 0 else f"no variance: every difference equals {d[0]:g}"


def _prob(p: float) -> float:
    """A p-value as a plain float in [0, 1], absorbing floating-point overshoot."""
    return min(1.0, max(0.0, float(p)))
