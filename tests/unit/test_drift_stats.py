"""The drift statistics equal scipy's on the same samples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sp
from scipy.spatial import distance

from driftloop.drift import stats

CASES = [
    # n1, n2, shift, discrete (ties between and within samples)
    (1, 1, 0.0, False),
    (7, 3, 0.5, False),
    (100, 80, 0.3, False),
    (5000, 5000, 0.05, False),
    (3000, 7000, 0.0, True),
    (10_000, 9_999, 0.02, False),
    (50_000, 30_000, 0.02, False),
    (200_000, 150_000, 0.01, False),
    (300_000, 100_000, 0.0, True),
]


@pytest.mark.parametrize(("n1", "n2", "shift", "discrete"), CASES)
def test_ks_and_wasserstein_match_scipy(n1: int, n2: int, shift: float, discrete: bool) -> None:
    rng = np.random.default_rng(n1 + n2)
    a = rng.normal(size=n1)
    b = rng.normal(shift, 1.0, size=n2)
    if discrete:
        a, b = np.round(a * 3), np.round(b * 3)
    a.sort()
    b.sort()
    want = sp.ks_2samp(a, b)
    d = stats.ks_statistic_sorted(a, b)
    d, p = stats.ks_pvalue(d, n1, n2)
    assert abs(d - want.statistic) <= 1e-9
    assert abs(p - want.pvalue) <= 1e-9
    w = stats.wasserstein_sorted(a, b)
    assert w == pytest.approx(sp.wasserstein_distance(a, b), rel=1e-9, abs=1e-12)


def test_ks_identical_and_disjoint_samples() -> None:
    a = np.arange(30_000, dtype=float)
    assert stats.ks_statistic_sorted(a, a) == 0.0
    assert stats.ks_statistic_sorted(a, a + 1e6) == 1.0
    assert stats.ks_pvalue(0.0, 100, 100)[1] == 1.0


def test_empty_samples_are_rejected() -> None:
    with pytest.raises(ValueError):
        stats.ks_statistic_sorted(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError):
        stats.wasserstein_sorted(np.array([1.0]), np.array([]))


def test_bin_counts_sorted_and_unsorted_agree() -> None:
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=10_000), 1)
    edges = np.array([-1.0, -0.5, 0.0, 0.0, 0.5, 1.0])
    assert np.array_equal(stats.bin_counts(x, edges), stats.bin_counts_sorted(np.sort(x), edges))
    assert stats.bin_counts(x, edges).sum() == x.size


def test_psi_formula_and_clipping() -> None:
    r = np.array([0.25, 0.25, 0.5])
    c = np.array([0.5, 0.25, 0.25])
    want = (0.5 - 0.25) * np.log(0.5 / 0.25) + (0.25 - 0.5) * np.log(0.25 / 0.5)
    assert stats.psi(r, c) == pytest.approx(want, rel=1e-12)
    assert stats.psi(r, r) == 0.0
    assert np.isfinite(stats.psi(np.array([1.0, 0.0]), np.array([0.0, 1.0])))


def test_categorical_statistics_match_scipy() -> None:
    r = np.array([120.0, 30.0, 50.0, 0.0])
    c = np.array([60.0, 40.0, 10.0, 5.0])
    chi, p = stats.chi_square(r, c)
    want = sp.chi2_contingency(np.vstack((r, c))[:, (r + c) > 0], correction=False)
    assert chi == pytest.approx(want.statistic, rel=1e-9)
    assert p == pytest.approx(want.pvalue, rel=1e-9, abs=1e-15)
    js = stats.jensen_shannon(r, c)
    assert js == pytest.approx(distance.jensenshannon(r / r.sum(), c / c.sum(), base=2), rel=1e-9)
    assert stats.l_infinity(r, c) == pytest.approx(np.max(np.abs(r / r.sum() - c / c.sum())))
    assert stats.chi_square(np.array([5.0]), np.array([3.0])) == (0.0, 1.0)
    assert stats.jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        stats.chi_square(np.array([0.0, 0.0]), np.array([1.0, 2.0]))
