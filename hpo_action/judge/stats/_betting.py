"""Paired means of bounded scores by betting: a test valid at every n, inverted exactly, and its power by simulation.

Waudby-Smith, I. & Ramdas, A. (2023), "Estimating means of bounded random variables by betting", JRSS-B 86(1):1–27.
Each score lies in a known range [low, high], so a difference d = candidate − reference lies in [−R, R] with
R = high − low, and x = (d + R)/(2R) in [0, 1]. Against H0: E[x] ≤ m a gambler who stakes λ_t ≥ 0 (fixed before
seeing x_t) grows the capital K(m) = Π_t (1 + λ_t·(x_t − m)); under H0 its expectation is at most 1, so K is an
e-value and P(K(m) ≥ 1/α) ≤ α by Markov's inequality, at every n, for any law of bounded scores, heavy tails and
skew included: nothing is approximated. The average of K over a few seeded orderings of the examples is still an
e-value (Section 6 of the paper) and makes the result nearly independent of the file's order.

The stake is the paper's predictable plug-in tuned for a fixed n, λ_t = √(2·log(1/α)/(n·σ̂²_{t−1})), truncated at
c/m (c = 0.9) so that every factor stays positive. Each factor, and so K, decreases in m: the lower bound, the
largest m that K still rejects at 1/α, inverts the same test (p < α ⟺ lower > δ0), and the upper bound inverts
the test of H0: E[x] ≥ m on 1 − x. The estimand is the mean difference of the scores *as given*: a caller that clips
losses into the range says so.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ._common import BoundedTest, Scores, _check_alpha, _check_n, _constant, _pair, _prob, _z_pair

ORDERINGS = 4  # orderings averaged: the stakes settle within a few dozen examples, so a few remove the order effect
_TRUNCATION = 0.9  # c: one example never costs more than 90% of the capital (the paper uses 1/2 to 3/4)
_PRIOR_VARIANCE = 0.25  # σ̂²_0, the largest variance a [0, 1] score can have; weight of one example
_BISECTION = 60  # halvings of [0, 1]: below 1e-15 relative to the range
# One power simulation bets on at most this many examples (about 2 s), with no fewer than _MIN_REPS data sets:
# beyond 10^4 pairs the reps shrink (50 at 10^5), so the confirmation of a huge needed_n is coarser, not slower.
_MAX_WORK = 20_000_000
_MIN_REPS = 50
_PLAN_SIZE = 20_000  # the planning law's support: the pilot repeated and the mass at −R (`_planning_differences`)


def betting_mean_test(
    candidate: Scores,
    reference: Scores,
    score_range: tuple[float, float],
    delta0: float = 0.0,
    alpha: float = 0.05,
    orderings: int = ORDERINGS,
    seed: int = 0,
) -> BoundedTest:
    """H0: mean(candidate − reference) ≤ delta0 for scores known to lie in `score_range`, by betting (module doc).

    p = min(1, 1/K(δ0)); `lower` and `upper` are the one-sided (1 − alpha) bounds that invert the test, within
    [−R, R]. A score outside the range is a ValueError: the guarantee holds only for scores inside it.
    """
    _check_alpha(alpha)
    cand, ref = _pair(candidate, reference)
    low, high = _check_range(score_range)
    for name, arr in (("candidate", cand), ("reference", ref)):
        bad = np.flatnonzero((arr < low) | (arr > high))
        if bad.size:
            value = arr[bad[0]]
            raise ValueError(f"{name} score at index {bad[0]} is {value:g}, outside the range [{low:g}, {high:g}]")
    width = high - low
    if not -width < delta0 < width:
        raise ValueError(f"delta0 must lie inside (-{width:g}, {width:g}), the range of a difference; got {delta0}")
    d = cand - ref
    n, estimate = len(d), float(np.mean(d))
    common = {"estimate": estimate, "delta0": float(delta0), "alpha": alpha, "method": "betting", "n": n}
    x = (d + width) / (2 * width)
    order = _orderings(n, orderings, seed)
    m0 = (delta0 + width) / (2 * width)
    e_value = float(np.exp(_log_mean_capital(x[order], np.array([m0]), n, alpha))[0])
    lower_x = _largest_rejected(x[order], n, alpha)
    upper_x = 1.0 - _largest_rejected(1.0 - x[order], n, alpha)
    reason = _constant(d) if np.ptp(d) == 0 else None
    return BoundedTest(
        **common,
        p_value=_prob(1.0 / e_value) if e_value > 0 else 1.0,
        lower=float(2 * width * lower_x - width),
        upper=float(2 * width * upper_x - width),
        reason=reason,
    )


def betting_max_evidence(n: int, score_range: tuple[float, float], delta0: float, alpha: float) -> float:
    """The largest e-value n examples can give against δ ≤ delta0: every example at the top of the range. Below
    1/alpha, no data of this size can promote, so the gate says inconclusive rather than test."""
    _check_n(n)
    low, high = _check_range(score_range)
    width = high - low
    m0 = (delta0 + width) / (2 * width)
    log_capital = float(_log_mean_capital(np.ones((1, n)), np.array([m0]), n, alpha)[0])
    return math.exp(min(log_capital, 700.0))  # beyond e^700 (a float's end) it is only ever compared with 1/alpha


def betting_power(
    differences: np.ndarray,
    n: int,
    effect: float,
    score_range: tuple[float, float],
    delta0: float = 0.0,
    alpha: float = 0.05,
    reps: int = 400,
    seed: int = 0,
) -> float:
    """The simulated power of `betting_mean_test` at n pairs when the differences look like `differences` shifted
    to mean `effect` (resampled with replacement, kept inside [−R, R]): the share of reps with p < alpha."""
    _check_n(n)
    d = np.asarray(differences, float)
    return float(np.mean(_rejections(d, n, effect, score_range, delta0, alpha, reps, seed)))


def betting_n(
    differences: np.ndarray,
    effect: float,
    score_range: tuple[float, float],
    delta0: float = 0.0,
    alpha: float = 0.05,
    power: float = 0.8,
    reps: int = 400,
    seed: int = 0,
    cap: int = 1_000_000,
) -> int:
    """The pairs at which the betting test reaches `power` when the differences look like `differences` shifted to
    mean `effect`, beside the rare large loss a pilot may hide (`_planning_differences`): the normal
    approximation of the log-capital (`_approximate_power`) proposes n, and the simulated power of the test itself
    confirms it, n growing by 10% until it does; `cap` when even that many fall short."""
    _z_pair(alpha, power)
    if not effect > delta0:
        raise ValueError(f"effect must exceed delta0={delta0}, got {effect}")
    d = _planning_differences(np.asarray(differences, float), score_range, alpha)

    def approx(n: int) -> bool:
        return _approximate_power(d, n, effect, score_range, delta0, alpha) >= power

    high = 8
    while not approx(high) and high < cap:
        high = min(cap, high * 2)
    low = high // 2
    while low + 1 < high:
        middle = (low + high) // 2
        low, high = (middle, high) if not approx(middle) else (low, middle)
    n = high
    while betting_power(d, n, effect, score_range, delta0, alpha, reps, seed) < power:
        if n >= cap:
            return cap
        n = min(cap, math.ceil(n * 1.1))
    return n


def betting_mde(
    differences: np.ndarray,
    n: int,
    score_range: tuple[float, float],
    delta0: float = 0.0,
    alpha: float = 0.05,
    power: float = 0.8,
    reps: int = 400,
    seed: int = 0,
) -> float:
    """The smallest effect the betting test detects with `power` at n pairs: the normal approximation proposes it
    (bisection), and the simulated power of the test itself confirms it, the effect growing by 5% of its excess
    over delta0 until it does; R (the whole range) when nothing inside the range is detectable. It plans on the same
    law as `betting_n` (`_planning_differences`)."""
    _z_pair(alpha, power)
    low_s, high_s = _check_range(score_range)
    width = high_s - low_s
    d = _planning_differences(np.asarray(differences, float), score_range, alpha)

    def approx(effect: float) -> bool:
        return _approximate_power(d, n, effect, score_range, delta0, alpha) >= power

    if not approx(width):
        return width
    low, high = delta0, width
    while high - low > max(1e-3 * (high - delta0), 1e-9 * width):  # 0.1% of the effect over delta0
        middle = (low + high) / 2
        low, high = (middle, high) if not approx(middle) else (low, middle)
    effect = high
    while betting_power(d, n, effect, score_range, delta0, alpha, reps, seed) < power:
        if effect >= width:
            return width
        effect = min(width, delta0 + (effect - delta0) * 1.05)
    return effect


PLANNING_RULE = (
    "the betting test simulated on the observed differences plus a mass at the adverse end of the range that "
    "raises their variance to a distribution-free (1 - alpha) upper bound (Waudby-Smith & Ramdas 2023 on the squares)"
)


def _planning_differences(d: np.ndarray, score_range: tuple[float, float], alpha: float) -> np.ndarray:
    """The law the power of `betting_n` and `betting_mde` is simulated on: the observed differences, and beside them
    a mass p at −R (the candidate worse by the whole range) just large enough that the variance of the mixture is
    `_variance_upper`, a (1 − alpha) bound that holds for every law in the range.

    Why: a pilot of skewed, heavy-tailed losses usually shows less spread than its law has (a 200-pair pilot of
    skewed t(2) differences showed half the variance, and a plan from it, even with a kurtosis-based upper limit,
    reached power 0.54, not 0.8: benchmarks/RESULTS.md, "Power at the reported needed n"). The clipped differences
    are bounded, so the variance has an upper bound that no tail can defeat; what the pilot cannot rule out is a
    rare large loss it did not draw, so that is what the plan adds. Its price is a floor of about R²·log(2/α)/n
    over the observed variance, which fades as the pilot grows. The added mass sits at the adverse end, not spread
    over the observed shape, because the betting test's power depends on more than the variance: its stakes come
    from the variance seen so far, so a rare large loss costs more than frequent small noise of the same variance
    (RESULTS.md: a pilot scaled up to the bound planned 3,067 pairs for a law with a 0.5% tail, whose power there
    was 0.73). The simulation of the test itself on this mixture sets n and the MDE."""
    width = _width(score_range)
    target = _variance_upper(d, width, alpha)
    mean, variance = float(d.mean()), float(d.var())
    if variance >= target:
        return d
    gap = (mean + width) ** 2  # the mass at −R lies mean + R below the pilot's mean

    def mixed(p: float) -> float:  # the variance of (1 − p)·pilot + p·δ(−R)
        return (1 - p) * variance + p * (1 - p) * gap

    low, high = 0.0, max(0.0, (gap - variance) / (2 * gap)) if gap > 0 else 0.0  # the mixture's largest variance
    if mixed(high) > target:
        for _ in range(_BISECTION):
            middle = (low + high) / 2
            low, high = (middle, high) if mixed(middle) < target else (low, middle)
    copies = max(1, math.ceil(_PLAN_SIZE / d.size))  # enough copies of the pilot that p is met within 1/_PLAN_SIZE
    base = np.tile(d, copies)
    added = round(high * base.size / (1 - high)) if high < 1 else base.size
    return np.concatenate([base, np.full(added, -width)])


def _variance_upper(d: np.ndarray, width: float, alpha: float) -> float:
    """A (1 − alpha) upper confidence bound on the variance of differences in [−R, R], valid for every law there:
    σ² = E[d²] − μ² ≤ U(E[d²]) − L(μ²), with U the betting upper bound on the mean of d²/R² ∈ [0, 1] and L(μ²) from
    the betting interval for μ (0 when it holds 0), each at alpha/2 (a union bound); never above R², the largest
    variance a law in [−R, R] can have. The bounds are those of this module's own test (`_largest_rejected`)."""
    n = d.size
    if n < 2:
        return width**2
    order, half = _orderings(n, ORDERINGS, 0), alpha / 2
    squares = (d / width) ** 2
    upper_square = 1.0 - _largest_rejected(1.0 - squares[order], n, half)
    x = (d + width) / (2 * width)
    lower = 2 * width * _largest_rejected(x[order], n, half) - width
    upper = width - 2 * width * _largest_rejected(1.0 - x[order], n, half)
    least_square = 0.0 if lower <= 0 <= upper else min(lower**2, upper**2)
    return float(min(width**2 * upper_square - least_square, width**2))


def _width(score_range: tuple[float, float]) -> float:
    low, high = _check_range(score_range)
    return high - low


def _approximate_power(
    d: np.ndarray, n: int, effect: float, score_range: tuple[float, float], delta0: float, alpha: float
) -> float:
    """Power of one ordering with the stake the test settles on, λ = min(√(2·log(1/α)/(n·σ²)), c/m): its log-capital
    is a sum of n independent log(1 + λ(x − m)), taken as normal with their mean and variance over the shifted
    differences. Only a proposal: `betting_n` and `betting_mde` confirm it by simulating the test."""
    low, high = _check_range(score_range)
    width = high - low
    x = (np.clip(d - d.mean() + effect, -width, width) + width) / (2 * width)
    m = (delta0 + width) / (2 * width)
    variance = max(float(np.var(x)), 1e-12)
    stake = min(math.sqrt(2 * math.log(1 / alpha) / (n * variance)), _TRUNCATION / m)
    gains = np.log1p(stake * (x - m))
    mean, spread = float(gains.mean()) * n, math.sqrt(max(float(gains.var()), 1e-300) * n)
    return float(_normal_cdf((mean - math.log(1 / alpha)) / spread))


def _normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def _check_range(score_range: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(v) for v in score_range)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"score_range must be two finite numbers low < high, got {score_range}")
    return low, high


def _orderings(n: int, count: int, seed: int) -> np.ndarray:
    """`count` seeded random orderings of n examples, as an index array (count, n): random, so that no order in the
    file (by id, by length) can line up with the stakes."""
    if int(count) != count or count < 1:
        raise ValueError(f"orderings must be a positive integer, got {count}")
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n) for _ in range(int(count))])


def _stakes(x: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """λ̃_t = √(2·log(1/α)/(n·σ̂²_{t−1})) for each row of x (the last axis is time), from the examples before t only:
    σ̂²_t = (σ̂²_0 + Σ_{i≤t}(x_i − μ̂_{i−1})²)/(t + 1), μ̂_t = (1/2 + Σ_{i≤t} x_i)/(t + 1) (the paper's eq. 27)."""
    count = np.arange(1, x.shape[-1] + 1)  # examples seen after step t
    seen_mean = (0.5 + np.cumsum(x, axis=-1)) / (count + 1)
    mean_before = np.concatenate([np.full((*x.shape[:-1], 1), 0.5), seen_mean[..., :-1]], axis=-1)
    seen_variance = (_PRIOR_VARIANCE + np.cumsum((x - mean_before) ** 2, axis=-1)) / (count + 1)
    variance = np.concatenate([np.full((*x.shape[:-1], 1), _PRIOR_VARIANCE), seen_variance[..., :-1]], axis=-1)
    return np.sqrt(2 * math.log(1 / alpha) / (n * np.maximum(variance, 1e-12)))


def _log_mean_capital(
    x: np.ndarray, m: np.ndarray, n: int, alpha: float, stakes: np.ndarray | None = None
) -> np.ndarray:
    """log of the capital K(m) averaged over the rows of x (orderings; the last axis is time), for each m; x may carry
    leading axes (replications) before the orderings axis, which the result keeps. `stakes`: `_stakes(x, n, alpha)`,
    which does not depend on m, when the caller has it."""
    stakes = _stakes(x, n, alpha) if stakes is None else stakes
    m = np.asarray(m, float)
    shape = (len(m),) + (1,) * x.ndim
    mm = m.reshape(shape)
    stake = np.minimum(stakes[None], _TRUNCATION / np.maximum(mm, 1e-300))
    log_capital = np.log1p(stake * (x[None] - mm)).sum(axis=-1)  # (len(m), ..., orderings)
    top = log_capital.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(log_capital - top).mean(axis=-1, keepdims=True)))[..., 0]


def _largest_rejected(x: np.ndarray, n: int, alpha: float) -> float:
    """The largest m in [0, 1] with K(m) ≥ 1/alpha (K decreases in m), found by bisection; 0 when none."""
    threshold, stakes = math.log(1 / alpha), _stakes(x, n, alpha)
    if _log_mean_capital(x, np.array([0.0]), n, alpha, stakes)[0] < threshold:
        return 0.0
    low, high = 0.0, 1.0
    for _ in range(_BISECTION):
        middle = (low + high) / 2
        if _log_mean_capital(x, np.array([middle]), n, alpha, stakes)[0] >= threshold:
            low = middle
        else:
            high = middle
    return low


@functools.lru_cache(maxsize=256)
def _draw_indices(size: int, n: int, reps: int, seed: int) -> np.ndarray:
    """The resampling indices of a power simulation: the same for every n and effect of one search (cached)."""
    return np.random.default_rng(seed).integers(0, size, size=(reps, n))


def _rejections(
    d: np.ndarray,
    n: int,
    effect: float,
    score_range: tuple[float, float],
    delta0: float,
    alpha: float,
    reps: int,
    seed: int,
) -> np.ndarray:
    low, high = _check_range(score_range)
    width = high - low
    reps = max(_MIN_REPS, min(reps, _MAX_WORK // (n * ORDERINGS)))  # bounded time at a very large n
    if d.size == 0:
        raise ValueError("need observed differences to simulate from, got none")
    centred = d - d.mean()
    drawn = np.clip(centred[_draw_indices(d.size, n, reps, seed)] + effect, -width, width)
    x = (drawn + width) / (2 * width)
    order = _orderings(n, ORDERINGS, seed)
    m0 = np.array([(delta0 + width) / (2 * width)])
    out = np.empty(reps, dtype=bool)
    chunk = max(1, (1 << 22) // (n * ORDERINGS))
    for start in range(0, reps, chunk):
        block = x[start : start + chunk][:, order]  # (reps, orderings, n)
        out[start : start + chunk] = _log_mean_capital(block, m0, n, alpha)[0] > math.log(1 / alpha)
    return out
