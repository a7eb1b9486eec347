"""Paired means: the sign-flip permutation test, studentized bootstraps and Student's t, each inverted exactly."""

from __future__ import annotations

import itertools
import math
from typing import Literal

import numpy as np
from scipy import stats as sps

from ._common import (
    BoundedTest,
    Scores,
    _check_alpha,
    _check_n,
    _check_resamples,
    _choose,
    _constant,
    _pair,
    _prob,
    _z_pair,
)

MeanMethod = Literal["permutation+bootstrap", "bootstrap", "permutation", "t"]
MEAN_METHODS = ("permutation+bootstrap", "bootstrap", "permutation", "t")
# Indices drawn per chunk: bounded memory at any n, and small enough to stay in cache.
_CHUNK = 1 << 18


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
