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
from statsmodels.stats.multitest import multipletests

from hpo_action import stats

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


# --- paired bootstrap ----------------------------------------------------------------------------------------------


def _skewed(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    ref = rng.exponential(1.0, n)
    return ref + rng.exponential(0.5, n) - 0.3 + rng.normal(0, 0.2, n), ref


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_mean_matches_scipy(method: str) -> None:
    rng = np.random.default_rng(5)
    for i in range(CASES):
        cand, ref = _skewed(rng, int(rng.integers(15, 120)))
        d = cand - ref
        ours = stats.paired_bootstrap_ci(cand, ref, resamples=20_000, seed=i, method=method)  # type: ignore[arg-type]
        theirs = sps.bootstrap((d,), np.mean, n_resamples=20_000, method=method, rng=i).confidence_interval
        width = theirs.high - theirs.low
        assert ours.method == method and ours.reason is None
        assert ours.delta == pytest.approx(d.mean(), abs=1e-12)
        assert ours.low == pytest.approx(theirs.low, abs=0.06 * width)
        assert ours.high == pytest.approx(theirs.high, abs=0.06 * width)


def test_bootstrap_median_matches_scipy() -> None:
    rng = np.random.default_rng(6)
    for i in range(CASES):
        cand, ref = _skewed(rng, 2 * int(rng.integers(20, 60)) + 1)
        d = cand - ref
        ours = stats.paired_bootstrap_ci(cand, ref, statistic="median", resamples=5_000, seed=i)
        theirs = sps.bootstrap((d,), np.median, n_resamples=5_000, method="percentile", rng=i).confidence_interval
        width = theirs.high - theirs.low
        assert ours.delta == pytest.approx(float(np.median(d)), abs=1e-12)
        assert ours.low == pytest.approx(theirs.low, abs=0.15 * width)
        assert ours.high == pytest.approx(theirs.high, abs=0.15 * width)


@pytest.mark.parametrize("n", [2, 3, 10, 11])
def test_median_jackknife_matches_brute_force(n: int) -> None:
    d = np.random.default_rng(n).normal(size=n).round(1)  # rounding makes ties
    brute = np.array([np.median(np.delete(d, i)) for i in range(n)])
    fast = stats._jackknife(d, "median")
    assert fast is not None
    np.testing.assert_allclose(np.sort(fast), np.sort(brute), atol=1e-12)


def test_bootstrap_resamples_pairs_not_sides() -> None:
    # Strongly correlated sides: resampling each side alone would give an interval about 30 times wider.
    rng = np.random.default_rng(7)
    ref = rng.normal(0, 10, 400)
    cand = ref + rng.normal(0.5, 0.3, 400)
    d = cand - ref
    r = stats.paired_bootstrap_ci(cand, ref, resamples=4_000)
    assert r.high - r.low == pytest.approx(2 * 1.96 * d.std() / math.sqrt(len(d)), rel=0.1)
    assert r.low < d.mean() < r.high


def test_bca_falls_back_to_percentile_when_it_degenerates() -> None:
    # The median of 20 zeros and 3 ones: every leave-one-out median is 0, so the acceleration is 0/0.
    d = [0.0] * 20 + [1.0] * 3
    r = stats.paired_bootstrap_ci(d, [0.0] * 23, statistic="median", method="bca")
    assert r.method == "percentile"
    assert r.reason is not None and "fell back to the percentile" in r.reason
    _json(r)


def test_bca_on_constant_differences_reports_the_point() -> None:
    r = stats.paired_bootstrap_ci([2.0, 3.0, 4.0], [1.0, 2.0, 3.0], method="bca")
    assert (r.delta, r.low, r.high, r.method) == (1.0, 1.0, 1.0, "percentile")
    assert r.reason is not None and "BCa is undefined" in r.reason


def test_bootstrap_identical_inputs_give_zero_interval() -> None:
    x = np.random.default_rng(8).normal(size=50)
    r = stats.paired_bootstrap_ci(x, x, method="bca")
    assert (r.delta, r.low, r.high) == (0.0, 0.0, 0.0)
    assert r.reason is not None and r.reason.startswith("no evidence: identical scores")


def test_bootstrap_is_seeded() -> None:
    cand, ref = _skewed(np.random.default_rng(9), 100)
    first, again = (stats.paired_bootstrap_ci(cand, ref, resamples=500, seed=3) for _ in range(2))
    other = stats.paired_bootstrap_ci(cand, ref, resamples=500, seed=4)
    assert first == again
    assert first.low != other.low


# --- paired permutation --------------------------------------------------------------------------------------------


def _scipy_permutation(cand: np.ndarray, ref: np.ndarray, alternative: str, n_resamples: float) -> float:
    def statistic(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
        return np.mean(x - y, axis=axis)

    return sps.permutation_test(
        (cand, ref), statistic, permutation_type="samples", alternative=alternative, n_resamples=n_resamples
    ).pvalue


def test_permutation_exact_matches_scipy_enumeration() -> None:
    rng = np.random.default_rng(10)
    for i in range(CASES):
        n = int(rng.integers(2, 11))  # scipy needs n >= 2
        ref = rng.normal(size=n)
        shift = rng.normal(0.3, 1.0, n)
        if i % 2:  # integer scores: ties among sign patterns and zero differences
            ref, shift = rng.integers(0, 4, n).astype(float), rng.integers(-1, 3, n).astype(float)
        cand = ref + shift
        for alt in ALTERNATIVES:
            ours = stats.paired_permutation_test(cand, ref, alternative=alt, resamples=2**n)  # type: ignore[arg-type]
            if np.any(cand != ref):
                assert ours.exact
            assert ours.p_value == pytest.approx(_scipy_permutation(cand, ref, alt, np.inf), abs=1e-12)


def test_permutation_randomized_is_close_to_the_exact_p() -> None:
    rng = np.random.default_rng(11)
    for i in range(CASES):
        n = int(rng.integers(12, 14))
        ref = rng.normal(size=n)
        cand = ref + rng.normal(0.2, 1.0, n)
        alt = ALTERNATIVES[i % 3]
        resamples = 2**n - 1  # one short of exact; Monte-Carlo standard error <= 0.008
        ours = stats.paired_permutation_test(cand, ref, alternative=alt, resamples=resamples, seed=i)  # type: ignore[arg-type]
        assert not ours.exact and ours.resamples == resamples
        assert ours.p_value == pytest.approx(_scipy_permutation(cand, ref, alt, np.inf), abs=0.035)


def test_permutation_exact_meet_in_the_middle_matches_brute_force() -> None:
    x = np.random.default_rng(12).normal(0.3, 1.0, 14)
    sums = stats._signed_sums(x)
    for alt, expected in (
        ("greater", np.mean(sums >= x.sum() - 1e-12)),
        ("less", np.mean(sums <= x.sum() + 1e-12)),
        ("two-sided", np.mean(np.abs(sums) >= abs(x.sum()) - 1e-12)),
    ):
        r = stats.paired_permutation_test(x, np.zeros(14), alternative=alt, resamples=2**14)  # type: ignore[arg-type]
        assert r.exact and r.p_value == pytest.approx(expected, abs=1e-15)


def test_permutation_single_pair_is_a_fair_coin() -> None:
    r = stats.paired_permutation_test([1.0], [0.0])
    assert (r.p_value, r.exact, r.resamples) == (0.5, True, 2)


def test_randomized_permutation_p_is_never_zero() -> None:
    ref = np.zeros(200)
    r = stats.paired_permutation_test(ref + 1.0 + np.arange(200) / 200, ref, resamples=999)
    assert r.p_value == pytest.approx(1 / 1000)  # Phipson & Smyth (2010): (0 + 1)/(999 + 1)


def test_permutation_identical_scores_have_no_evidence() -> None:
    r = stats.paired_permutation_test([0.3, 0.4], [0.3, 0.4], alternative="two-sided")
    assert (r.p_value, r.delta, r.reason) == (1.0, 0.0, "no evidence: identical scores")


# --- paired t ------------------------------------------------------------------------------------------------------


def test_paired_t_matches_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(13)
    for _ in range(CASES):
        n = int(rng.integers(2, 200))
        ref = rng.normal(size=n)
        cand = ref + rng.normal(rng.normal(0, 0.3), rng.uniform(0.1, 2), n)
        for alt in ALTERNATIVES:
            ours = stats.paired_t(cand, ref, alternative=alt, confidence=0.9)  # type: ignore[arg-type]
            theirs = sps.ttest_rel(cand, ref, alternative=alt)
            assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-10, abs=1e-10)
            assert ours.p_value == pytest.approx(theirs.pvalue, abs=1e-10)
            assert ours.df == theirs.df
        ci = sps.ttest_rel(cand, ref).confidence_interval(0.9)
        assert (ours.low, ours.high) == (pytest.approx(ci.low, abs=1e-10), pytest.approx(ci.high, abs=1e-10))


@pytest.mark.parametrize(("cand", "ref"), [([1.0, 2.0], [0.0, 1.0]), ([1.0, 2.0], [1.0, 2.0]), ([3.0], [1.0])])
def test_paired_t_without_variance_is_not_evidence(cand: list[float], ref: list[float]) -> None:
    r = stats.paired_t(cand, ref)
    assert r.p_value == 1.0 and r.low == r.high == r.delta and r.reason
    _json(r)


# --- Holm ----------------------------------------------------------------------------------------------------------


def test_holm_matches_statsmodels() -> None:
    rng = np.random.default_rng(14)
    for _ in range(CASES):
        p = rng.uniform(0, 0.2, int(rng.integers(1, 20)))
        p[rng.random(len(p)) < 0.2] = 0.01  # ties
        p[rng.random(len(p)) < 0.1] = 1.0
        np.testing.assert_allclose(stats.holm(p.tolist()), multipletests(p, method="holm")[1], atol=1e-12)


def test_holm_edge_cases() -> None:
    assert stats.holm([]) == []
    assert stats.holm([0.5]) == [0.5]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.holm([0.1, float("nan")])


# --- power (Connor 1987) -------------------------------------------------------------------------------------------


def test_sample_size_hand_checked() -> None:
    # δ = 0.1, ψ = 0.2, power 0.8 (z_β = 0.841621), √0.2 = 0.447214, √(0.2 − 0.01) = 0.435890:
    # one-sided α = 0.05 (z = 1.644854): (0.735603 + 0.366855)² / 0.01 = 121.54 → 122;
    # two-sided α = 0.05 (z = 1.959964): (0.876523 + 0.366855)² / 0.01 = 154.60 → 155.
    assert stats.mcnemar_sample_size(0.1, 0.2) == 122
    assert stats.mcnemar_sample_size(0.1, 0.2, alternative="two-sided") == 155


def test_mde_inverts_sample_size() -> None:
    rng = np.random.default_rng(15)
    for i in range(CASES):
        psi = float(rng.uniform(0.02, 0.6))
        delta = float(rng.uniform(0.05, 0.9)) * psi
        alt = ALTERNATIVES[i % 2]
        n = stats.mcnemar_sample_size(delta, psi, alpha=0.05, power=0.8, alternative=alt)  # type: ignore[arg-type]
        assert stats.mcnemar_mde(n, psi, alternative=alt) <= delta + 1e-12  # type: ignore[arg-type]
        if n > 1:
            assert stats.mcnemar_mde(n - 1, psi, alternative=alt) > delta  # type: ignore[arg-type]


def test_sample_size_reaches_the_target_power_in_simulation() -> None:
    rng = np.random.default_rng(16)
    delta, psi = 0.1, 0.2
    n = stats.mcnemar_sample_size(delta, psi)
    tables = rng.multinomial(n, [(psi + delta) / 2, (psi - delta) / 2, 1 - psi], size=20_000)
    b, c = tables[:, 0], tables[:, 1]
    z = (b - c) / np.sqrt(np.maximum(b + c, 1))
    assert np.mean(z > sps.norm.isf(0.05)) == pytest.approx(0.8, abs=0.03)


def test_mde_is_defined_without_discordance() -> None:
    assert stats.mcnemar_mde(100, 0.0) == pytest.approx(0.01)  # floor ψ = 1/n, clamped to ψ
    assert 0 < stats.mcnemar_mde(10_000, 0.1) < 0.1


# --- non-inferiority -----------------------------------------------------------------------------------------------


def _tango_by_optimization(b: int, c: int, n: int, d0: float) -> float:
    """Score statistic with the restricted MLE of p01 found numerically, not from Tango's closed form."""

    def nll(q: float) -> float:
        cells = np.array([q + d0, q, 1 - 2 * q - d0])
        counts = np.array([b, c, n - b - c])
        return -float(np.sum(counts[counts > 0] * np.log(cells[counts > 0])))

    lo, hi = max(0.0, -d0), (1 - d0) / 2
    q = optimize.minimize_scalar(nll, bounds=(lo + 1e-13, hi - 1e-13), method="bounded", options={"xatol": 1e-13}).x
    return (b - c - n * d0) / math.sqrt(n * (2 * q + d0 * (1 - d0)))


def test_noninferiority_bool_matches_a_numerical_score_test() -> None:
    rng = np.random.default_rng(17)
    for b, c, both, neither in _tables(18):
        margin = float(rng.uniform(0.01, 0.2))
        cand, ref = _vectors(b, c, both, neither)
        n = len(cand)
        r = stats.noninferiority(cand, ref, margin)
        assert r.p_value == pytest.approx(sps.norm.sf(_tango_by_optimization(b, c, n, -margin)), abs=1e-6)
        assert r.delta == pytest.approx((b - c) / n, abs=1e-12)
        assert r.passed == (r.p_value < 0.05)
        if -1 < r.bound <= 0:  # the bound is where the one-sided test sits exactly at its level
            assert stats.noninferiority(cand, ref, -r.bound).p_value == pytest.approx(0.05, abs=1e-6)


def test_noninferiority_bool_with_zero_margin_is_mcnemar() -> None:
    for b, c, both, neither in _tables(19):
        cand, ref = _vectors(b, c, both, neither)
        mcn = stats.mcnemar(cand, ref, method="chi2", alternative="greater")
        assert stats.noninferiority(cand, ref, 0.0).p_value == pytest.approx(mcn.p_value, abs=1e-9)


def test_noninferiority_lower_is_better_flips_the_orientation() -> None:
    ref = np.random.default_rng(20).exponential(1.0, 300)
    cand = ref - 0.05  # a lower loss: better
    r = stats.noninferiority(cand, ref, 0.02, higher_is_better=False, kind="continuous", resamples=2_000)
    assert r.delta == pytest.approx(0.05) and r.bound == pytest.approx(0.05) and r.passed
    errs_c, errs_r = _vectors(3, 9, 0, 88)  # candidate errs 3 + 0, reference errs 9 + 0: candidate better
    flipped = stats.noninferiority(errs_c, errs_r, 0.01, higher_is_better=False)
    assert flipped.delta == pytest.approx(0.06) and flipped.passed


def test_noninferiority_continuous_bound_matches_scipy() -> None:
    rng = np.random.default_rng(21)
    for i in range(CASES):
        cand, ref = _skewed(rng, int(rng.integers(20, 150)))
        d = cand - ref
        ours = stats.noninferiority(cand, ref, 0.1, kind="continuous", resamples=20_000, seed=i)
        ci = sps.bootstrap((d,), np.mean, n_resamples=20_000, method="percentile", alternative="greater", rng=i)
        scale = d.std() / math.sqrt(len(d))
        assert ours.bound == pytest.approx(ci.confidence_interval.low, abs=0.1 * scale)
        assert ours.passed == (ours.bound > -0.1)


def test_noninferiority_without_disagreement() -> None:
    same = [True, False, True, True]
    zero = stats.noninferiority(same, same, 0.0)
    assert zero.p_value == 1.0 and not zero.passed and zero.reason == "no evidence: the models never disagree"
    n = 200
    wide = stats.noninferiority([True] * n, [True] * n, 0.05)
    z = sps.norm.ppf(0.95)
    assert wide.bound == pytest.approx(-(z**2) / (n + z**2), abs=1e-9)  # the score bound with b = c = 0
    assert wide.passed


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
]
CALLS: list[Callable[[Any, Any], Any]] = [
    lambda c, r: stats.paired_bootstrap_ci(c, r, resamples=200),
    lambda c, r: stats.paired_bootstrap_ci(c, r, resamples=200, method="bca"),
    lambda c, r: stats.paired_bootstrap_ci(c, r, statistic="median", resamples=200, method="bca"),
    lambda c, r: stats.paired_permutation_test(c, r, alternative="two-sided"),
    lambda c, r: stats.paired_permutation_test(c, r, resamples=1),
    lambda c, r: stats.paired_t(c, r, alternative="two-sided"),
    lambda c, r: stats.noninferiority(c, r, 0.1, kind="continuous", resamples=200),
]
BOOL_CALLS: list[Callable[[Any, Any], Any]] = [
    *(
        lambda c, r, m=m, a=a: stats.mcnemar(c, r, method=m, alternative=a)
        for m in ("midp", "exact", "chi2", "chi2_cc")
        for a in ALTERNATIVES
    ),
    lambda c, r: stats.noninferiority(c, r, 0.0),
    lambda c, r: stats.noninferiority(c, r, 0.1),
]


@pytest.mark.parametrize(("cand", "ref"), DEGENERATE)
def test_no_nan_or_inf_on_degenerate_inputs(cand: list[Any], ref: list[Any]) -> None:
    calls = CALLS + (BOOL_CALLS if isinstance(cand[0], bool) else [])
    for call in calls:
        _json(call(cand, ref))
    for n in (1, 2, 10, 10_000):
        assert math.isfinite(stats.mcnemar_mde(n, 0.0)) and math.isfinite(stats.mcnemar_mde(n, 1.0))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: stats.paired_t([1.0, 2.0], [1.0]), "paired: 2 vs 1"),
        (lambda: stats.paired_bootstrap_ci([], []), "at least one"),
        (lambda: stats.paired_permutation_test([1.0, float("nan")], [0.0, 0.0]), "index 1 is not a finite"),
        (lambda: stats.mcnemar([True], [False], method="wald"), "method must be one of"),  # type: ignore[arg-type]
        (lambda: stats.paired_t([1.0], [0.0], alternative="bigger"), "alternative must be one of"),  # type: ignore[arg-type]
        (lambda: stats.paired_bootstrap_ci([1.0], [0.0], confidence=1.0), "confidence"),
        (lambda: stats.paired_bootstrap_ci([1.0], [0.0], resamples=0), "resamples"),
        (lambda: stats.noninferiority([True], [False], -0.1), "margin"),
        (lambda: stats.mcnemar_sample_size(0.3, 0.2), "delta"),
        (lambda: stats.mcnemar_mde(0, 0.2), "positive integer"),
    ],
)
def test_bad_input_says_what_is_wrong(call: Callable[[], Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


def test_stats_is_a_leaf_module() -> None:
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(stats))
    imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {"__future__", "math", "collections", "dataclasses", "typing", "numpy", "scipy"}
