"""hpo_action.stats against independent references: statsmodels, scipy and direct computations from definitions."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

from hpo_action.judge import stats

CASES = 50
ALTERNATIVES = ("greater", "two-sided", "less")


def _tables(seed: int, cases: int = CASES) -> list[tuple[int, int, int, int]]:
    """Random (b, c, both, neither) tables with at least one discordant pair, a fifth of them with b == c."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(cases):
        b = int(rng.integers(0, 60))
        c = b if i % 5 == 0 else int(rng.integers(0, 60))
        if b + c == 0:
            b = 1
        out.append((b, c, int(rng.integers(0, 100)), int(rng.integers(0, 100))))
    return out


def _vectors(b: int, c: int, both: int, neither: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled per-example correctness with exactly this contingency table."""
    cand = np.array([True] * b + [False] * c + [True] * both + [False] * neither)
    ref = np.array([False] * b + [True] * c + [True] * both + [False] * neither)
    order = np.random.default_rng(seed).permutation(len(cand))
    return cand[order], ref[order]


def _json(result: Any) -> str:
    """Fails on NaN or inf, as the gate's JSON contract demands."""
    return json.dumps(dataclasses.asdict(result), allow_nan=False)


# --- McNemar -------------------------------------------------------------------------------------------------------


def test_mcnemar_counts_the_table() -> None:
    cand, ref = _vectors(3, 5, 7, 11)
    r = stats.mcnemar(cand, ref)
    assert (r.b, r.c, r.both, r.neither, r.n) == (3, 5, 7, 11, 26)


def test_mcnemar_exact_matches_statsmodels_and_binomtest() -> None:
    for b, c, both, neither in _tables(1):
        cand, ref = _vectors(b, c, both, neither)
        two = stats.mcnemar(cand, ref, method="exact", alternative="two-sided").p_value
        sm = sm_mcnemar([[both, b], [c, neither]], exact=True).pvalue
        assert two == pytest.approx(sm, abs=1e-10)
        assert two == pytest.approx(sps.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue, abs=1e-10)
        for alt in ("greater", "less"):
            ours = stats.mcnemar(cand, ref, method="exact", alternative=alt).p_value
            assert ours == pytest.approx(sps.binomtest(b, b + c, 0.5, alternative=alt).pvalue, abs=1e-10)


def _midp_by_definition(b: int, m: int, alternative: str) -> float:
    """P(strictly more extreme) + P(equally extreme)/2, summed term by term from the binomial pmf."""
    x = np.arange(m + 1)
    pmf = sps.binom.pmf(x, m, 0.5)
    if alternative == "greater":
        more, equal = x > b, x == b
    elif alternative == "less":
        more, equal = x < b, x == b
    else:
        more, equal = np.abs(x - m / 2) > abs(b - m / 2), np.abs(x - m / 2) == abs(b - m / 2)
    return float(pmf[more].sum() + 0.5 * pmf[equal].sum())


def test_midp_matches_its_definition() -> None:
    for b, c, both, neither in _tables(2):
        cand, ref = _vectors(b, c, both, neither)
        for alt in ALTERNATIVES:
            ours = stats.mcnemar(cand, ref, method="midp", alternative=alt).p_value
            assert ours == pytest.approx(_midp_by_definition(b, b + c, alt), abs=1e-10)


def test_midp_when_b_equals_c_is_one_minus_half_the_point_probability() -> None:
    # Fagerland, Lydersen & Laake (2013), supplement: "If n12 = n21, the mid-p-value equals 1 − 0.5·binompdf".
    cand, ref = _vectors(6, 6, 4, 4)
    r = stats.mcnemar(cand, ref, method="midp", alternative="two-sided")
    assert r.p_value == pytest.approx(1 - 0.5 * math.comb(12, 6) / 2**12, abs=1e-12)
    assert stats.mcnemar(cand, ref, method="exact", alternative="two-sided").p_value == 1.0


def test_chi2_two_sided_matches_statsmodels() -> None:
    for b, c, both, neither in _tables(3):
        cand, ref = _vectors(b, c, both, neither)
        table = [[both, b], [c, neither]]
        plain = stats.mcnemar(cand, ref, method="chi2", alternative="two-sided")
        sm = sm_mcnemar(table, exact=False, correction=False)
        assert plain.statistic == pytest.approx(sm.statistic, abs=1e-10)
        assert plain.p_value == pytest.approx(sm.pvalue, abs=1e-10)
        if b != c:  # at b == c statsmodels' corrected statistic is 1/(b + c) > 0; ours clamps the correction to 0
            corrected = stats.mcnemar(cand, ref, method="chi2_cc", alternative="two-sided")
            sm = sm_mcnemar(table, exact=False, correction=True)
            assert corrected.statistic == pytest.approx(sm.statistic, abs=1e-10)
            assert corrected.p_value == pytest.approx(sm.pvalue, abs=1e-10)


def test_chi2_one_sided_is_the_normal_approximation_of_the_binomial_tail() -> None:
    for b, c, both, neither in _tables(4):
        cand, ref = _vectors(b, c, both, neither)
        m = b + c
        greater = stats.mcnemar(cand, ref, method="chi2", alternative="greater").p_value
        less = stats.mcnemar(cand, ref, method="chi2", alternative="less").p_value
        assert greater == pytest.approx(sps.norm.sf((b - m / 2) / (math.sqrt(m) / 2)), abs=1e-12)
        assert greater + less == pytest.approx(1.0, abs=1e-12)
        # Continuity-corrected P(B >= b) ≈ P(N >= b − 1/2) and P(B <= b) ≈ P(N <= b + 1/2).
        cc_greater = stats.mcnemar(cand, ref, method="chi2_cc", alternative="greater").p_value
        cc_less = stats.mcnemar(cand, ref, method="chi2_cc", alternative="less").p_value
        assert cc_greater == pytest.approx(sps.norm.sf((b - 0.5 - m / 2) / (math.sqrt(m) / 2)), abs=1e-12)
        assert cc_less == pytest.approx(sps.norm.cdf((b + 0.5 - m / 2) / (math.sqrt(m) / 2)), abs=1e-12)
        if b != c:
            two = stats.mcnemar(cand, ref, method="chi2_cc", alternative="two-sided").p_value
            assert two == pytest.approx(2 * min(cc_greater, cc_less), abs=1e-12)


def test_chi2_cc_with_b_equal_c_gives_p_one() -> None:
    cand, ref = _vectors(5, 5, 3, 3)
    assert stats.mcnemar(cand, ref, method="chi2_cc", alternative="two-sided").p_value == 1.0


@pytest.mark.parametrize("method", ["midp", "exact", "chi2", "chi2_cc"])
@pytest.mark.parametrize("alternative", ALTERNATIVES)
def test_mcnemar_without_disagreement_has_no_evidence(method: str, alternative: str) -> None:
    cand, ref = _vectors(0, 0, 8, 4)
    r = stats.mcnemar(cand, ref, method=method, alternative=alternative)  # type: ignore[arg-type]
    assert r.p_value == 1.0
    assert r.reason == "no evidence: the models never disagree"


def test_mcnemar_rejects_non_booleans() -> None:
    with pytest.raises(ValueError, match=r"booleans.*index 1 is 0.5"):
        stats.mcnemar([1, 0.5], [0, 1])


# --- paired proportions: McNemar's bound, Tango's test ----------------------------------------------------------


def _midp_at(b: int, m: int, theta: float) -> float:
    """The one-sided mid-p value of b successes in m at success probability theta, summed from the pmf."""
    x = np.arange(m + 1)
    pmf = sps.binom.pmf(x, m, theta)
    return float(pmf[x > b].sum() + 0.5 * pmf[x == b].sum())


def test_proportion_test_midp_is_mcnemar_and_its_bound_sits_at_the_level() -> None:
    for b, c, both, neither in _tables(30):
        cand, ref = _vectors(b, c, both, neither)
        n, m = len(cand), b + c
        r = stats.paired_proportion_test(cand, ref)
        assert r.p_value == pytest.approx(stats.mcnemar(cand, ref).p_value, abs=1e-12)
        assert r.estimate == pytest.approx((b - c) / n, abs=1e-12)
        if b > 0:
            theta = (r.lower * n / m + 1) / 2  # δ_L = (m/n)(2θ_L − 1)
            assert _midp_at(b, m, theta) == pytest.approx(0.05, abs=1e-9)
        assert (r.p_value < 0.05) == (r.lower > 0)


def test_proportion_test_exact_bound_is_clopper_pearson() -> None:
    from statsmodels.stats.proportion import proportion_confint

    for b, c, both, neither in _tables(31):
        cand, ref = _vectors(b, c, both, neither)
        n, m = len(cand), b + c
        r = stats.paired_proportion_test(cand, ref, method="exact")
        low, _ = proportion_confint(b, m, alpha=0.10, method="beta")  # a two-sided 90% interval: one-sided 95%
        assert r.lower == pytest.approx(m / n * (2 * low - 1), abs=1e-9)
        assert (r.p_value < 0.05) == (r.lower > 0)


def _tango_by_optimization(b: int, c: int, n: int, d0: float) -> float:
    """Score statistic with the restricted MLE of p01 found numerically, not from Tango's closed form."""

    def nll(q: float) -> float:
        cells = np.array([q + d0, q, 1 - 2 * q - d0])
        counts = np.array([b, c, n - b - c])
        return -float(np.sum(counts[counts > 0] * np.log(cells[counts > 0])))

    lo, hi = max(0.0, -d0), (1 - d0) / 2
    q = optimize.minimize_scalar(nll, bounds=(lo + 1e-13, hi - 1e-13), method="bounded", options={"xatol": 1e-13}).x
    return (b - c - n * d0) / math.sqrt(n * (2 * q + d0 * (1 - d0)))


def test_tango_matches_a_numerical_score_test_and_inverts_at_the_level() -> None:
    rng = np.random.default_rng(17)
    for b, c, both, neither in _tables(18):
        d0 = float(rng.uniform(-0.2, 0.1))
        cand, ref = _vectors(b, c, both, neither)
        n = len(cand)
        r = stats.paired_proportion_test(cand, ref, d0, method="tango")
        assert r.p_value == pytest.approx(sps.norm.sf(_tango_by_optimization(b, c, n, d0)), abs=1e-6)
        assert (r.p_value < 0.05) == (r.lower > d0)
        for bound, tail in ((r.lower, sps.norm.sf), (r.upper, sps.norm.cdf)):
            if -1 < bound < 1:  # the test of H0: δ = bound sits exactly at its level
                assert tail(_tango_by_optimization(b, c, n, bound)) == pytest.approx(0.05, abs=1e-6)


def test_tango_at_zero_margin_is_the_uncorrected_mcnemar_z() -> None:
    for b, c, both, neither in _tables(19):
        cand, ref = _vectors(b, c, both, neither)
        mcn = stats.mcnemar(cand, ref, method="chi2", alternative="greater")
        assert stats.paired_proportion_test(cand, ref, 0.0, method="tango").p_value == pytest.approx(
            mcn.p_value, abs=1e-9
        )


def test_tango_without_disagreement_and_the_smallest_set_that_can_pass() -> None:
    n = 200
    z = sps.norm.ppf(0.95)
    same = stats.paired_proportion_test([True] * n, [True] * n, -0.05, method="tango")
    assert same.lower == pytest.approx(-(z**2) / (n + z**2), abs=1e-9)  # the score bound with b = c = 0
    assert same.reason == "no evidence: the models never disagree"
    assert stats.noninferiority_min_n(0.05) == 52 and stats.noninferiority_min_n(0.02) == 133
    for margin in (0.05, 0.02, 0.1):
        k = stats.noninferiority_min_n(margin)
        passes = [
            stats.paired_proportion_test([True] * m, [True] * m, -margin, method="tango").p_value < 0.05
            for m in (k - 1, k)
        ]
        assert passes == [False, True]


def test_mcnemar_with_a_margin_is_refused() -> None:
    with pytest.raises(ValueError, match="tango"):
        stats.paired_proportion_test([True], [False], 0.05)


# --- paired means --------------------------------------------------------------------------------------------------


def _skewed(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    ref = rng.exponential(1.0, n)
    return ref + rng.exponential(0.5, n) - 0.3 + rng.normal(0, 0.2, n), ref


def test_mean_t_matches_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(13)
    for _ in range(CASES):
        n = int(rng.integers(2, 200))
        ref = rng.normal(size=n)
        cand = ref + rng.normal(rng.normal(0, 0.3), rng.uniform(0.1, 2), n)
        d0 = float(rng.normal(0, 0.2))
        ours = stats.paired_mean_test(cand, ref, d0, method="t")
        theirs = sps.ttest_rel(cand - d0, ref, alternative="greater")
        assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-10)
        low = sps.ttest_rel(cand, ref, alternative="greater").confidence_interval(0.95).low
        high = sps.ttest_rel(cand, ref, alternative="less").confidence_interval(0.95).high
        assert (ours.lower, ours.upper) == (pytest.approx(low, abs=1e-10), pytest.approx(high, abs=1e-10))


def _scipy_permutation(d: np.ndarray, alternative: str) -> float:
    return sps.permutation_test(
        (d,), np.mean, permutation_type="samples", alternative=alternative, n_resamples=np.inf
    ).pvalue


def test_mean_permutation_enumerates_exactly_like_scipy_at_any_margin() -> None:
    rng = np.random.default_rng(10)
    for i in range(CASES):
        n = int(rng.integers(2, 12))
        d = rng.normal(0.3, 1.0, n) if i % 2 else rng.integers(-1, 3, n).astype(float)  # ties, zeros
        d0 = float(rng.choice([0.0, 0.25, -0.5]))
        ours = stats.paired_mean_test(d, np.zeros(n), d0, method="permutation", resamples=2**n)
        if np.ptp(d) > 0:
            assert ours.p_value == pytest.approx(_scipy_permutation(d - d0, "greater"), abs=1e-12)
            assert (ours.p_value < 0.05) == (ours.lower > d0)


def test_mean_permutation_randomized_is_close_to_exact_and_never_zero() -> None:
    rng = np.random.default_rng(11)
    for i in range(20):
        n = int(rng.integers(12, 14))
        d = rng.normal(0.2, 1.0, n)
        ours = stats.paired_mean_test(d, np.zeros(n), method="permutation", resamples=2**n - 1, seed=i)
        assert ours.p_value == pytest.approx(_scipy_permutation(d, "greater"), abs=0.035)
    far = stats.paired_mean_test(1.0 + np.arange(200) / 200, np.zeros(200), method="permutation", resamples=999)
    assert far.p_value == pytest.approx(1 / 1000)  # Phipson & Smyth (2010): (0 + 1)/(999 + 1)


def _bootstrap_t_by_hand(
    d: np.ndarray, d0: float, resamples: int, seed: int, after_flips: bool
) -> tuple[float, float, float, float]:
    """Half-sample bootstrap-t and Hall-corrected p-values and lower bounds, one resample at a time, from the
    draws of the same seed (after the sign-flip component's draws when it runs too)."""
    n, half = len(d), len(d) // 2
    rng = np.random.default_rng(seed)
    if after_flips:
        rng.integers(0, 2, size=(resamples, n), dtype=np.uint8)

    def moments(x: np.ndarray) -> tuple[float, float, float]:
        mean, sd = float(x.mean()), float(x.std(ddof=1))
        return mean, sd, float(((x - mean) ** 3).mean() / sd**3)

    def hall(w: float, g: float) -> float:
        return w + g * w * w / 3 + g * g * w**3 / 27 + g / (6 * n)

    mean, sd, skew = moments(d)
    corrected = []
    for row in rng.integers(0, n, size=(resamples, n)):
        m, s, g = moments(d[row])
        corrected.append(hall((m - mean) / s, g))
    plain = []
    for row in rng.integers(0, n, size=(resamples, half)):
        m, s, _ = moments(d[row])
        plain.append(math.sqrt(half) * (m - mean) / s)
    w = (mean - d0) / sd
    p_plain = (1 + sum(t >= math.sqrt(n) * w for t in plain)) / (resamples + 1)
    p_hall = (1 + sum(t >= hall(w, skew) for t in corrected)) / (resamples + 1)
    k = math.ceil(0.05 * (resamples + 1) - 1) - 1
    lower_plain = mean - sd * sorted(plain, reverse=True)[k] / math.sqrt(n)
    root = optimize.brentq(lambda x: hall(x, skew) - sorted(corrected, reverse=True)[k], -50, 50, xtol=1e-13)
    return p_plain, p_hall, lower_plain, mean - sd * root


def test_mean_bootstrap_components_match_a_direct_computation() -> None:
    rng = np.random.default_rng(21)
    for i in range(8):
        cand, ref = _skewed(rng, int(rng.integers(20, 60)))
        d = cand - ref
        d0 = float(rng.normal(0, 0.1))
        alone = stats.paired_mean_test(cand, ref, d0, method="bootstrap", resamples=400, seed=i)
        p_plain, p_hall, lower_plain, lower_hall = _bootstrap_t_by_hand(d, d0, 400, i, after_flips=False)
        assert alone.p_value == pytest.approx(max(p_plain, p_hall), abs=1e-12)  # both must reject
        assert alone.lower == pytest.approx(min(lower_plain, lower_hall), abs=1e-9)
        both = stats.paired_mean_test(cand, ref, d0, method="permutation+bootstrap", resamples=400, seed=i)
        p_plain, p_hall, lower_plain, lower_hall = _bootstrap_t_by_hand(d, d0, 400, i, after_flips=True)
        flips = stats.paired_mean_test(cand, ref, d0, method="permutation", resamples=400, seed=i)
        assert both.p_value == pytest.approx(max(p_plain, p_hall, flips.p_value), abs=1e-12)
        assert both.lower == pytest.approx(min(lower_plain, lower_hall, flips.lower), abs=1e-9)


def test_every_mean_test_inverts_exactly() -> None:
    rng = np.random.default_rng(22)
    for i in range(60):
        cand, ref = _skewed(rng, int(rng.integers(10, 120)))
        d0 = float(rng.normal(0.2, 0.3))
        for method in stats.MEAN_METHODS:
            r = stats.paired_mean_test(cand, ref, d0, method=method, resamples=300, seed=i)  # type: ignore[arg-type]
            assert (r.p_value < 0.05) == (r.lower > d0), (method, r)
            if method == "t":
                assert r.lower <= r.estimate <= r.upper


def test_mean_test_is_seeded_and_shift_equivariant() -> None:
    cand, ref = _skewed(np.random.default_rng(9), 100)
    first, again = (stats.paired_mean_test(cand, ref, resamples=500, seed=3) for _ in range(2))
    assert first == again
    shifted = stats.paired_mean_test(cand + 0.7, ref, 0.7, resamples=500, seed=3)
    assert shifted.p_value == first.p_value
    assert shifted.lower == pytest.approx(first.lower + 0.7, abs=1e-9)


def test_bootstrap_lower_bound_covers_the_mean_at_its_level() -> None:
    rng = np.random.default_rng(23)
    covered = sum(
        stats.paired_mean_test(rng.exponential(1.0, 60), np.zeros(60), method="bootstrap", resamples=400, seed=i).lower
        <= 1.0
        for i in range(400)
    )
    assert covered / 400 >= 0.93  # nominal 0.95; three standard errors below it


# --- power (Connor 1987) -------------------------------------------------------------------------------------------


def test_sample_size_hand_checked() -> None:
    # δ = 0.1, ψ = 0.2, power 0.8 (z_β = 0.841621), √0.2 = 0.447214, √(0.2 − 0.01) = 0.435890:
    # one-sided α = 0.05 (z = 1.644854): (0.735603 + 0.366855)² / 0.01 = 121.54 → 122.
    assert stats.paired_proportion_n(0.1, 0.2) == 122
    # A margin: √n·(δ − δ0) = z_α√(ψ − δ0²) + z_β√(ψ − δ²) with δ0 = 0.02: (0.735278 + 0.366855)²/0.0064 → 190.
    assert stats.paired_proportion_n(0.1, 0.2, delta0=0.02) == 190
    # Continuous: ((1.644854 + 0.841621)·0.5/0.1)² = 154.56 → 155.
    assert stats.paired_mean_n(0.1, 0.5) == 155


def test_mde_inverts_sample_size() -> None:
    rng = np.random.default_rng(15)
    for _ in range(CASES):
        psi = float(rng.uniform(0.02, 0.6))
        delta = float(rng.uniform(0.05, 0.9)) * psi
        n = stats.paired_proportion_n(delta, psi)
        assert stats.paired_proportion_mde(n, psi) <= delta + 1e-9
        if n > 1:
            assert stats.paired_proportion_mde(n - 1, psi) > delta
        sd = float(rng.uniform(0.1, 2))
        n = stats.paired_mean_n(delta, sd)
        assert stats.paired_mean_mde(n, sd) <= delta + 1e-12
        if n > 1:
            assert stats.paired_mean_mde(n - 1, sd) > delta


def test_sample_size_reaches_the_target_power_in_simulation() -> None:
    rng = np.random.default_rng(16)
    delta, psi = 0.1, 0.2
    n = stats.paired_proportion_n(delta, psi)
    tables = rng.multinomial(n, [(psi + delta) / 2, (psi - delta) / 2, 1 - psi], size=20_000)
    b, c = tables[:, 0], tables[:, 1]
    z = (b - c) / np.sqrt(np.maximum(b + c, 1))
    assert np.mean(z > sps.norm.isf(0.05)) == pytest.approx(0.8, abs=0.03)


def test_mde_never_hides_behind_a_small_observed_discordance() -> None:
    # 2 disagreements in 50 pairs: a true δ needs ψ ≥ δ, so the MDE is where ψ = δ, not clamped to 0.04.
    mde = stats.paired_proportion_mde(50, 0.04)
    assert 0.04 < mde == pytest.approx(0.1186, abs=1e-3)
    assert stats.paired_proportion_mde(50, 0.0) == pytest.approx(mde, abs=1e-9)
    assert 0 < stats.paired_proportion_mde(10_000, 0.1) < 0.1


# --- degenerate inputs and validation ------------------------------------------------------------------------------

DEGENERATE: list[tuple[list[Any], list[Any]]] = [
    ([1.0], [0.0]),
    ([0.5], [0.5]),
    ([2.0] * 6, [2.0] * 6),
    ([3.0] * 6, [1.0] * 6),
    ([True] * 5, [True] * 5),
    ([False] * 5, [False] * 5),
    ([True] * 5, [False] * 5),
    ([False] * 5, [True] * 5),
    ([1.0, 2.0], [0.0, 0.0]),
]
CALLS: list[Callable[[Any, Any], Any]] = [
    *(lambda c, r, m=m: stats.paired_mean_test(c, r, 0.0, method=m, resamples=200) for m in stats.MEAN_METHODS),
    lambda c, r: stats.paired_mean_test(c, r, -0.1, resamples=200),
]
BOOL_CALLS: list[Callable[[Any, Any], Any]] = [
    *(
        lambda c, r, m=m, a=a: stats.mcnemar(c, r, method=m, alternative=a)
        for m in ("midp", "exact", "chi2", "chi2_cc")
        for a in ALTERNATIVES
    ),
    *(lambda c, r, m=m: stats.paired_proportion_test(c, r, method=m) for m in stats.PROPORTION_METHODS),
    lambda c, r: stats.paired_proportion_test(c, r, -0.1, method="tango"),
]


@pytest.mark.parametrize(("cand", "ref"), DEGENERATE)
def test_no_nan_or_inf_on_degenerate_inputs(cand: list[Any], ref: list[Any]) -> None:
    calls = CALLS + (BOOL_CALLS if isinstance(cand[0], bool) else [])
    for call in calls:
        _json(call(cand, ref))
    for n in (1, 2, 10, 10_000):
        assert math.isfinite(stats.paired_proportion_mde(n, 0.0)) and math.isfinite(stats.paired_proportion_mde(n, 1.0))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: stats.paired_mean_test([1.0, 2.0], [1.0]), "paired: 2 vs 1"),
        (lambda: stats.paired_mean_test([], []), "at least one"),
        (lambda: stats.paired_mean_test([1.0, float("nan")], [0.0, 0.0]), "index 1 is not a finite"),
        (lambda: stats.mcnemar([True], [False], method="wald"), "method must be one of"),  # type: ignore[arg-type]
        (lambda: stats.paired_mean_test([1.0], [0.0], method="bca"), "method must be one of"),  # type: ignore[arg-type]
        (lambda: stats.paired_mean_test([1.0], [0.0], alpha=0.5), "alpha"),
        (lambda: stats.paired_mean_test([1.0], [0.0], resamples=0), "resamples"),
        (lambda: stats.paired_proportion_test([True], [False], 1.0, method="tango"), "delta0"),
        (lambda: stats.paired_proportion_n(0.0, 0.2), "delta"),
        (lambda: stats.paired_proportion_mde(0, 0.2), "positive integer"),
        (lambda: stats.noninferiority_min_n(0.0), "margin"),
    ],
)
def test_bad_input_says_what_is_wrong(call: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_stats_is_a_leaf_package() -> None:
    import ast
    from pathlib import Path

    imported: set[str] = set()
    for path in Path(stats.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        imported |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {
            n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and not n.level
        }
    allowed = {"__future__", "functools", "math", "itertools", "collections", "dataclasses", "typing", "numpy", "scipy"}
    assert imported <= allowed, imported - allowed


# --- betting (Waudby-Smith & Ramdas 2023), issue 21 ----------------------------------------------------------------


def _capital_by_hand(x: list[float], m: float, alpha: float) -> float:
    """The paper's predictable plug-in bet, one example at a time in plain Python (an independent reading of it)."""
    n, capital, mean, variance = len(x), 1.0, 0.5, 0.25
    sum_x, sum_sq = 0.0, 0.0
    for seen, value in enumerate(x, start=1):
        stake = min(math.sqrt(2 * math.log(1 / alpha) / (n * variance)), 0.9 / m)
        capital *= 1 + stake * (value - m)
        sum_sq += (value - mean) ** 2
        sum_x += value
        mean = (0.5 + sum_x) / (seen + 1)
        variance = (0.25 + sum_sq) / (seen + 1)
    return capital


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_betting_capital_matches_a_plain_reading_of_the_paper(seed: int):
    rng = np.random.default_rng(seed)
    reference = rng.uniform(0, 1, 80)
    candidate = np.clip(reference + rng.normal(0.15, 0.2, 80), 0, 1)
    result = stats.betting_mean_test(candidate, reference, (0.0, 1.0), 0.0, 0.05, orderings=1, seed=seed)
    order = np.random.default_rng(seed).permutation(80)
    x = ((candidate - reference + 1) / 2)[order]
    expected = _capital_by_hand(x.tolist(), 0.5, 0.05)
    assert result.p_value == pytest.approx(min(1.0, 1 / expected), rel=1e-9)
    assert result.estimate == pytest.approx(float(np.mean(candidate - reference)))


def test_betting_bounds_invert_the_test_and_hold_their_level():
    rng = np.random.default_rng(4)
    for i in range(60):
        n = int(rng.integers(10, 300))
        reference = rng.beta(2, 5, n)
        candidate = np.clip(reference + rng.normal(float(rng.uniform(-0.05, 0.1)), 0.2, n), 0, 1)
        delta0 = float(rng.choice([0.0, 0.02, -0.03]))
        result = stats.betting_mean_test(candidate, reference, (0.0, 1.0), delta0, 0.05, seed=i)
        assert (result.p_value < 0.05) == (result.lower > delta0)
        assert result.lower <= result.estimate <= result.upper
    # At the null boundary with skewed, heavy-tailed bounded scores: rarely rejected (at most alpha + 2 SE).
    hits = 0
    for i in range(300):
        d = np.where(rng.random(100) < 0.02, -0.9, 0.9 * 0.02 / 0.98)  # mean exactly 0: rare large losses
        hits += stats.betting_mean_test(0.5 + d / 2, 0.5 - d / 2, (0.0, 1.0), 0.0, 0.05, seed=i).p_value < 0.05
    assert hits / 300 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 300)


def test_betting_n_reaches_its_power_on_fresh_simulations():
    """Issue 21 item 5: at the n the betting test reports, its power (fresh draws from the same law) is >= 0.75."""
    rng = np.random.default_rng(6)
    law = rng.lognormal(0.0, 0.8, 5000) * 0.1  # skewed differences, mean removed below
    law -= law.mean()
    pilot = law[rng.integers(0, law.size, 300)]
    n = stats.betting_n(pilot, 0.05, (0.0, 2.0), 0.0, 0.05, 0.8, reps=200, seed=1)
    hits = 0
    for i in range(200):
        d = law[rng.integers(0, law.size, n)] + 0.05
        hits += stats.betting_mean_test(1.0 + d / 2, 1.0 - d / 2, (0.0, 2.0), 0.0, 0.05, seed=i).p_value < 0.05
    assert hits / 200 >= 0.75, (n, hits / 200)
    assert stats.betting_mde(pilot, n, (0.0, 2.0), 0.0, 0.05, 0.8, reps=200, seed=1) <= 0.05 * 1.1


def test_betting_n_plans_for_a_tail_its_pilot_does_not_show():
    """Issue 21 item 5: a loss of 1.9 on 1% of examples that a pilot of 150 never shows. Planned on the pilot's own
    spread (even raised by its kurtosis) the reported n was 154, with power 0.29 at it; planned on the
    distribution-free bound of the variance, the power at the reported n is >= 0.75."""
    rng = np.random.default_rng(3)

    def law(size: int) -> np.ndarray:
        return np.where(rng.random(size) < 0.01, -1.9, rng.normal(0.0, 0.02, size))

    centre = float(law(200_000).mean())
    pilot = law(150) - centre
    assert pilot.min() > -1  # the tail is not in the pilot
    n = stats.betting_n(pilot, 0.05, (0.0, 2.0), 0.0, 0.05, 0.8, reps=200, seed=1)
    hits = 0
    for i in range(200):
        d = np.clip(law(n) - centre + 0.05, -2.0, 2.0)
        hits += stats.betting_mean_test(1.0 + d / 2, 1.0 - d / 2, (0.0, 2.0), 0.0, 0.05, seed=i).p_value < 0.05
    assert hits / 200 >= 0.75, (n, hits / 200)


def test_betting_plans_when_the_pilot_shows_no_spread():
    """A pilot of 200 identical pairs says little about the spread of the law: the plan assumes the largest spread
    the range allows at that pilot size, so a law with noise (sd 0.12 in [−1, 1]) still reaches the power at the
    reported n. Planned on the pilot's zero spread, n was the noise-free minimum, far short."""
    rng = np.random.default_rng(4)
    n = stats.betting_n(np.zeros(200), 0.1, (0.0, 1.0), 0.0, 0.05, 0.8, reps=200, seed=1)
    hits = 0
    for i in range(200):
        d = np.clip(rng.normal(0.1, 0.12, n), -1.0, 1.0)
        hits += stats.betting_mean_test(0.5 + d / 2, 0.5 - d / 2, (0.0, 1.0), 0.0, 0.05, seed=i).p_value < 0.05
    assert hits / 200 >= 0.75, (n, hits / 200)
