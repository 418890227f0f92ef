"""Pure two-sample statistics over sorted numeric samples and category counts.

Everything here is a pure function of arrays, so it tests against scipy directly.
The numeric functions take *sorted* samples: the reference is sorted once when its
profile is built, so a check only sorts the current window.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]

# scipy's ks_2samp uses the exact distribution up to this sample size ("auto" method).
KS_EXACT_MAX_N = 10_000
# Below this many points in total the KS statistic is evaluated at every point directly.
_KS_DIRECT_N = 20_000
PSI_EPS = 1e-4


def _ranges(lo: NDArray[np.int64], hi: NDArray[np.int64]) -> NDArray[np.int64]:
    """Concatenation of ``arange(lo[i], hi[i])`` for every i, without a Python loop."""
    lens = hi - lo
    total = int(lens.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    starts = np.repeat(lo - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return starts + np.arange(total, dtype=np.int64)


def _cdf_diffs(a: F64, b: F64, x: F64) -> F64:
    """F_a(x) - F_b(x) with right-continuous ECDFs, computed as scipy does (i/n1 - j/n2)."""
    return (
        np.searchsorted(a, x, side="right") / a.size - np.searchsorted(b, x, side="right") / b.size
    )


def _ks_from_diffs(d: F64) -> float:
    """scipy's two-sided reduction: the larger of max(d) and clip(-min(d), 0, 1)."""
    max_s = float(d.max())
    min_s = float(np.clip(-d.min(), 0, 1))
    return min_s if min_s > max_s else max_s


def ks_statistic_sorted(a: F64, b: F64) -> float:
    """Exact two-sample KS statistic of sorted samples ``a`` (reference) and ``b`` (current).

    Equals ``scipy.stats.ks_2samp(a, b).statistic`` bit for bit (same candidate points,
    same arithmetic), but avoids locating every point of one sample in the other: the
    ECDF difference is evaluated exactly at ~16*sqrt(n) reference split points, and only
    the gaps whose bound could beat that value are evaluated point by point.
    """
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        raise ValueError("KS needs two non-empty samples")
    if n1 + n2 <= _KS_DIRECT_N:
        return _ks_from_diffs(_cdf_diffs(a, b, np.concatenate((a, b))))
    g = int(min(n1 - 1, max(256, 16 * math.isqrt(n1 + n2))))
    idx = np.unique(np.linspace(0, n1 - 1, g + 2).astype(np.int64)[1:-1])
    v = np.unique(a[idx])
    r_le = np.searchsorted(a, v, side="right")
    r_lt = np.searchsorted(a, v, side="left")
    c_le = np.searchsorted(b, v, side="right")
    c_lt = np.searchsorted(b, v, side="left")
    at_splits = r_le / n1 - c_le / n2
    lower = max(float(np.abs(at_splits).max()), 0.0)
    # Open gaps between consecutive split values, plus the two unbounded ends.
    lo1 = np.concatenate(([0], r_le))
    hi1 = np.concatenate((r_lt, [n1]))
    lo2 = np.concatenate(([0], c_le))
    hi2 = np.concatenate((c_lt, [n2]))
    bound = np.maximum(hi1 / n1 - lo2 / n2, hi2 / n2 - lo1 / n1)
    refine = (bound >= lower - 1e-12) & ((hi1 > lo1) | (hi2 > lo2))
    pts = np.concatenate(
        (a[_ranges(lo1[refine], hi1[refine])], b[_ranges(lo2[refine], hi2[refine])])
    )
    d = np.concatenate((at_splits, _cdf_diffs(a, b, pts)))
    return _ks_from_diffs(d)


def ks_pvalue(d: float, n1: int, n2: int) -> tuple[float, float]:
    """Two-sided p-value for KS statistic ``d``, following scipy's ``method="auto"``.

    Returns ``(statistic, p_value)``: like scipy, the exact method reports the statistic
    rounded to the lattice ``h / lcm(n1, n2)`` it tests.
    """
    from scipy import stats

    if max(n1, n2) <= KS_EXACT_MAX_N:
        try:
            from scipy.stats._stats_py import _attempt_exact_2kssamp

            g = math.gcd(n1, n2)
            ok, d_exact, prob = _attempt_exact_2kssamp(n1, n2, g, d, "two-sided")
            if ok:
                return float(d_exact), float(np.clip(prob, 0, 1))
        except ImportError:  # pragma: no cover - scipy moved its private helper
            pass
    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = m * n / (m + n)
    return d, float(np.clip(stats.kstwo.sf(d, np.round(en)), 0, 1))


def ks_pvalue_limit(d: float, n1: int, n2: int) -> float:
    """Two-sided p-value from Kolmogorov's limit distribution at ``sqrt(n1*n2/(n1+n2))*d``.

    Microseconds where scipy's finite-n ``kstwo.sf`` can take a second or more in the tail
    at 10^6 rows; off from it by O(1/sqrt(n)), which is why it is only reported (under its
    own name) when a distance, not the p-value, decides.
    """
    from scipy import stats

    en = n1 * n2 / (n1 + n2)
    return float(np.clip(stats.kstwobign.sf(math.sqrt(en) * d), 0, 1))


@lru_cache(maxsize=4)
def _quantile_segments(n1: int, n2: int) -> tuple[NDArray[np.int64], NDArray[np.int64], F64]:
    """Pieces on which both empirical quantile functions are constant (depends on sizes only)."""
    both = np.concatenate((np.arange(n1, dtype=np.int64) * n2, np.arange(n2, dtype=np.int64) * n1))
    both.sort(kind="stable")  # two sorted runs: a linear merge
    starts = both[np.concatenate(([True], both[1:] != both[:-1]))]
    ends = np.concatenate((starts[1:], [n1 * n2]))
    return starts // n2, starts // n1, (ends - starts) / (n1 * n2)


def wasserstein_sorted(a: F64, b: F64) -> float:
    """First Wasserstein distance of two sorted samples (``scipy.stats.wasserstein_distance``).

    Uses the quantile form ∫|Qa(u) - Qb(u)| du, whose pieces depend only on the sizes.
    """
    if a.size == 0 or b.size == 0:
        raise ValueError("Wasserstein needs two non-empty samples")
    if a.size == b.size:
        return float(np.mean(np.abs(a - b)))
    ia, ib, w = _quantile_segments(a.size, b.size)
    return float(np.dot(np.abs(a[ia] - b[ib]), w))


def bin_counts_sorted(sorted_values: F64, edges: F64) -> NDArray[np.int64]:
    """Counts per bin ``(-inf, e0], (e0, e1], …, (e_last, inf)`` of a sorted sample."""
    cum = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(np.concatenate(([0], cum, [sorted_values.size]))).astype(np.int64)


def bin_counts(values: F64, edges: F64) -> NDArray[np.int64]:
    """Same bins as :func:`bin_counts_sorted` for an unsorted sample."""
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=edges.size + 1)


def psi(ref_fractions: F64, cur_fractions: F64, eps: float = PSI_EPS) -> float:
    """Population stability index Σ (c - r)*ln(c / r), fractions clipped at ``eps``."""
    r = np.clip(np.asarray(ref_fractions, dtype=np.float64), eps, None)
    c = np.clip(np.asarray(cur_fractions, dtype=np.float64), eps, None)
    return float(np.sum((c - r) * np.log(c / r)))


def _aligned(ref_counts: NDArray[np.float64], cur_counts: NDArray[np.float64]) -> tuple[F64, F64]:
    r = np.asarray(ref_counts, dtype=np.float64)
    c = np.asarray(cur_counts, dtype=np.float64)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError("category counts must be aligned 1-d arrays")
    if r.sum() <= 0 or c.sum() <= 0:
        raise ValueError("category counts must not be empty")
    return r, c


def chi_square(ref_counts: F64, cur_counts: F64) -> tuple[float, float]:
    """Chi-square test of homogeneity on the 2xk table (``chi2_contingency``, no correction).

    A two-sample test: the reference is a sample too, so a category unseen in it does
    not divide by zero as a goodness-of-fit test would.
    """
    from scipy import stats

    r, c = _aligned(ref_counts, cur_counts)
    keep = (r + c) > 0
    table = np.vstack((r[keep], c[keep]))
    if table.shape[1] < 2:
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    return stat, float(stats.chi2.sf(stat, table.shape[1] - 1))


def jensen_shannon(ref_counts: F64, cur_counts: F64) -> float:
    """Jensen-Shannon distance in base 2 (0 = same distribution, 1 = disjoint)."""
    r, c = _aligned(ref_counts, cur_counts)
    p, q = r / r.sum(), c / c.sum()
    m = (p + q) / 2

    def kl(x: F64) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))


def l_infinity(ref_counts: F64, cur_counts: F64) -> float:
    """Largest absolute difference of category frequencies (L∞ distance)."""
    r, c = _aligned(ref_counts, cur_counts)
    return float(np.max(np.abs(r / r.sum() - c / c.sum())))
