"""Drift verdicts: a reference profile against a current window.

Defaults (each overridable per feature with a :class:`FeatureRule`):

* numeric, both samples ≤ ``large_n`` (1,000) rows: two-sample KS, drift when p < 0.05;
* numeric, larger: normalized Wasserstein (W1 / reference std), drift when ≥ 0.1;
* categorical, small: chi-square test of homogeneity, drift when p < 0.05;
* categorical, larger: Jensen-Shannon distance (base 2), drift when ≥ 0.1;
* other statistics on request: ``psi`` (≥ 0.1, quantile bins of the reference) and
  ``linf`` (≥ 0.1).

Why distances at large N: a p-value measures how sure we are that two distributions
differ, not by how much; with a million rows a shift of 0.01 standard deviations is
"significant" for every feature. Effect sizes (Wasserstein, PSI, JS) stay small for
such shifts, so they only flag changes large enough to matter.

KS p-values: where KS decides (small samples, or a rule asks for it) the p-value is
computed exactly as scipy's ``ks_2samp`` does (``ks_p_value``); elsewhere, where it only
informs, Kolmogorov's limit distribution gives ``ks_p_value_limit`` in microseconds
(scipy's finite-n tail takes seconds per feature at 10^6 rows). ``ks_p_value="scipy"``
forces the former everywhere.

The dataset drifts when the share of drifted features is ≥ ``drift_share`` (0.5).
Every statistic is reported for every feature (``scores``); the rule picks the one
that decides.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from driftloop.drift import stats
from driftloop.drift.profile import (
    F64,
    CategoricalProfile,
    CategoricalSketch,
    DriftInputError,
    NumericProfile,
    NumericSketch,
    ReferenceProfile,
    WindowSummary,
    category_labels,
    numeric_values,
)

RESULT_NAME = "driftloop.drift"
RESULT_VERSION = 1
NUMERIC_STATISTICS = ("ks", "psi", "wasserstein")
CATEGORICAL_STATISTICS = ("chi2", "jensenshannon", "linf")
P_VALUE_STATISTICS = frozenset({"ks", "chi2"})
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "ks": 0.05,
    "chi2": 0.05,
    "psi": 0.1,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "linf": 0.1,
}
# The score that decides for each statistic (p-value tests decide on their p-value).
VALUE_KEY: Mapping[str, str] = {"ks": "ks_p_value", "chi2": "chi2_p_value"}
WASSERSTEIN_MIN_STD = 0.001
_PARALLEL_MIN_VALUES = 200_000


@dataclass(frozen=True)
class FeatureRule:
    """Override of the statistic and/or threshold for one feature."""

    statistic: str | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DriftConfig:
    """How verdicts are reached; the defaults are stated in the module docstring."""

    features: Mapping[str, FeatureRule] = field(default_factory=dict)
    thresholds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    large_n: int = 1000
    numeric_small: str = "ks"
    numeric_large: str = "wasserstein"
    categorical_small: str = "chi2"
    categorical_large: str = "jensenshannon"
    drift_share: float = 0.5
    nan_policy: Literal["raise", "omit"] = "raise"
    ks_p_value: Literal["auto", "scipy", "limit"] = "auto"
    workers: int = field(default_factory=lambda: min(4, os.cpu_count() or 1))

    def scipy_p_value(self, statistic: str) -> bool:
        """Whether the KS p-value is computed as scipy does (else the limit distribution)."""
        return self.ks_p_value == "scipy" or (self.ks_p_value == "auto" and statistic == "ks")

    def rule_for(self, name: str, kind: str, n_ref: int, n_cur: int) -> tuple[str, float]:
        """The deciding statistic and threshold for one feature."""
        rule = self.features.get(name, FeatureRule())
        large = min(n_ref, n_cur) > self.large_n
        if kind == "numeric":
            stat = rule.statistic or (self.numeric_large if large else self.numeric_small)
            allowed = NUMERIC_STATISTICS
        else:
            stat = rule.statistic or (self.categorical_large if large else self.categorical_small)
            allowed = CATEGORICAL_STATISTICS
        if stat not in allowed:
            raise DriftInputError(
                f"statistic {stat!r} does not apply to {kind} feature {name!r}; "
                f"use one of {allowed}",
                feature=name,
                rule="statistic",
            )
        threshold = rule.threshold if rule.threshold is not None else self.thresholds[stat]
        return stat, float(threshold)


def is_drifted(statistic: str, value: float, threshold: float) -> bool:
    """p-values drift below the threshold, distances at or above it."""
    if statistic in P_VALUE_STATISTICS:
        return value < threshold
    return value >= threshold


@dataclass(frozen=True)
class FeatureDrift:
    """The verdict on one feature."""

    name: str
    kind: str
    statistic: str
    value: float
    threshold: float
    drifted: bool
    n_reference: int
    n_current: int
    scores: Mapping[str, float]

    @property
    def stattype_is_p_value(self) -> bool:
        return self.statistic in P_VALUE_STATISTICS

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "statistic": self.statistic,
            "value": self.value,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "stattype": "p_value" if self.statistic in P_VALUE_STATISTICS else "distance",
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "scores": dict(self.scores),
        }


@dataclass(frozen=True)
class DriftResult:
    """Stable result shape: ``{"data": {...}, "meta": {...}}``."""

    features: Mapping[str, FeatureDrift]
    dataset_drift: bool
    share_drifted: float
    meta: Mapping[str, Any]

    @property
    def drifted_features(self) -> list[str]:
        return [k for k, f in self.features.items() if f.drifted]

    @property
    def data(self) -> dict[str, Any]:
        return {
            "dataset_drift": self.dataset_drift,
            "share_drifted": self.share_drifted,
            "n_drifted": len(self.drifted_features),
            "n_features": len(self.features),
            "features": {k: f.to_dict() for k, f in self.features.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "meta": dict(self.meta)}

    def verdict(self) -> dict[str, Any]:
        """The compact form ``driftloop drift --json`` prints."""
        return {
            "dataset_drift": self.dataset_drift,
            "share_drifted": self.share_drifted,
            "features": {
                k: {
                    "statistic": f.statistic,
                    "value": f.value,
                    "threshold": f.threshold,
                    "drifted": f.drifted,
                }
                for k, f in self.features.items()
            },
        }


def _ks_scores(d: float, n1: int, n2: int, scipy_p: bool) -> dict[str, float]:
    if scipy_p:
        d, p = stats.ks_pvalue(d, n1, n2)
        return {"ks": d, "ks_p_value": p}
    return {"ks": d, "ks_p_value_limit": stats.ks_pvalue_limit(d, n1, n2)}


def _numeric_scores(ref: NumericProfile, cur_sorted: F64, scipy_p: bool) -> dict[str, float]:
    d = stats.ks_statistic_sorted(ref.sample, cur_sorted)
    ks = _ks_scores(d, ref.sample.size, cur_sorted.size, scipy_p)
    cur_frac = stats.bin_counts_sorted(cur_sorted, ref.psi_edges) / cur_sorted.size
    w = stats.wasserstein_sorted(ref.sample, cur_sorted)
    return {
        **ks,
        "psi": stats.psi(ref.psi_fractions, cur_frac),
        "wasserstein": float(w / max(ref.std, WASSERSTEIN_MIN_STD)),
        "wasserstein_raw": float(w),
    }


def _categorical_scores(
    ref_counts: Mapping[str, int], cur_counts: Mapping[str, int]
) -> dict[str, float]:
    cats = sorted(set(ref_counts) | set(cur_counts))
    r = np.asarray([ref_counts.get(c, 0) for c in cats], dtype=np.float64)
    c = np.asarray([cur_counts.get(k, 0) for k in cats], dtype=np.float64)
    chi, p = stats.chi_square(r, c)
    return {
        "chi2_p_value": p,
        "chi2_statistic": chi,
        "jensenshannon": stats.jensen_shannon(r, c),
        "linf": stats.l_infinity(r, c),
    }


def _decide(
    config: DriftConfig, name: str, kind: str, n_ref: int, n_cur: int, scores: dict[str, float]
) -> FeatureDrift:
    stat, threshold = config.rule_for(name, kind, n_ref, n_cur)
    value = float(scores[VALUE_KEY.get(stat, stat)])
    return FeatureDrift(
        name, kind, stat, value, threshold, is_drifted(stat, value, threshold), n_ref, n_cur, scores
    )


def _check_rules(profile: ReferenceProfile, config: DriftConfig) -> None:
    unknown = sorted(set(config.features) - set(profile.features))
    if unknown:
        raise DriftInputError(
            f"rules name unknown features {unknown}", feature=unknown[0], rule="unknown_feature"
        )


def _result(
    profile: ReferenceProfile,
    feats: dict[str, FeatureDrift],
    config: DriftConfig,
    mode: str,
    rows: int,
) -> DriftResult:
    share = len([f for f in feats.values() if f.drifted]) / len(feats)
    meta = {
        "name": RESULT_NAME,
        "version": RESULT_VERSION,
        "detector": "univariate",
        "mode": mode,
        "reference": {"rows": profile.rows, "source": profile.source, "created": profile.created},
        "current": {"rows": rows},
        "drift_share": config.drift_share,
        "large_n": config.large_n,
    }
    return DriftResult(feats, share >= config.drift_share, share, meta)


def detect(
    profile: ReferenceProfile,
    current: Mapping[str, ArrayLike],
    config: DriftConfig | None = None,
) -> DriftResult:
    """Exact check of a current window (columns by feature name) against ``profile``.

    Raises :class:`DriftInputError` for a missing feature, an empty column, or NaN/inf
    values (unless ``nan_policy="omit"``).
    """
    config = config or DriftConfig()
    _check_rules(profile, config)
    missing = [k for k in profile.features if k not in current]
    if missing:
        raise DriftInputError(
            f"current window lacks features {missing}", feature=missing[0], rule="missing"
        )
    numeric: dict[str, F64] = {}
    feats: dict[str, FeatureDrift] = {}
    for name, ref in profile.features.items():
        if isinstance(ref, NumericProfile):
            vals = numeric_values(name, current[name], nan_policy=config.nan_policy)
            if vals.size == 0:
                raise DriftInputError(
                    f"feature {name!r} has no values in the current window",
                    feature=name,
                    rule="empty",
                )
            numeric[name] = vals
        else:
            labels = category_labels(current[name])
            if labels.size == 0:
                raise DriftInputError(
                    f"feature {name!r} has no values in the current window",
                    feature=name,
                    rule="empty",
                )
            cats, counts = np.unique(labels, return_counts=True)
            scores = _categorical_scores(
                ref.counts, dict(zip(cats.tolist(), counts.tolist(), strict=True))
            )
            feats[name] = _decide(config, name, "categorical", ref.n, int(labels.size), scores)

    def one(name: str) -> FeatureDrift:
        ref = profile.features[name]
        assert isinstance(ref, NumericProfile)
        cur = np.sort(numeric[name])
        stat, _ = config.rule_for(name, "numeric", ref.n, int(cur.size))
        scores = _numeric_scores(ref, cur, config.scipy_p_value(stat))
        return _decide(config, name, "numeric", ref.n, int(cur.size), scores)

    names = list(numeric)
    total = sum(v.size for v in numeric.values())
    if config.workers > 1 and len(names) > 1 and total >= _PARALLEL_MIN_VALUES:
        with ThreadPoolExecutor(config.workers) as pool:  # numpy sorts/searches release the GIL
            done = list(pool.map(one, names))
    else:
        done = [one(n) for n in names]
    feats.update({f.name: f for f in done})
    ordered = {k: feats[k] for k in profile.features}
    rows = max((f.n_current for f in ordered.values()), default=0)
    return _result(profile, ordered, config, "exact", rows)


def _sketch_scores(ref: NumericProfile, sk: NumericSketch, scipy_p: bool) -> dict[str, float]:
    """Statistics from grid counts: PSI is exact, KS a lower bound, Wasserstein approximate.

    KS misses at most the largest grid-cell mass; Wasserstein integrates |ΔF| at the grid
    edges (trapezoids, with triangles out to the observed extremes).
    """
    n = sk.n
    step = sk.counts.size // ref.psi_fractions.size
    psi_counts = sk.counts.reshape(ref.psi_fractions.size, step).sum(axis=1)
    cdf_cur = np.cumsum(sk.counts)[:-1] / n
    diff = np.abs(ref.grid_cdf - cdf_cur)
    ks = _ks_scores(float(diff.max()), ref.n, n, scipy_p)
    e = ref.grid_edges
    inner = float(np.sum((diff[1:] + diff[:-1]) / 2 * np.diff(e)))
    lo, hi = min(ref.min, sk.min), max(ref.max, sk.max)
    w = inner + diff[0] * max(e[0] - lo, 0.0) / 2 + diff[-1] * max(hi - e[-1], 0.0) / 2
    return {
        **ks,
        "psi": stats.psi(ref.psi_fractions, psi_counts / n),
        "wasserstein": float(w / max(ref.std, WASSERSTEIN_MIN_STD)),
        "wasserstein_raw": float(w),
    }


def detect_summary(
    profile: ReferenceProfile, summary: WindowSummary, config: DriftConfig | None = None
) -> DriftResult:
    """Check a streamed :class:`WindowSummary` (bounded memory; numeric statistics binned)."""
    config = config or DriftConfig()
    _check_rules(profile, config)
    feats: dict[str, FeatureDrift] = {}
    for name, ref in profile.features.items():
        sk = summary.sketches.get(name)
        if sk is None or sk.n == 0:
            raise DriftInputError(
                f"feature {name!r} has no values in the current window", feature=name, rule="empty"
            )
        if isinstance(ref, NumericProfile) and isinstance(sk, NumericSketch):
            stat, _ = config.rule_for(name, "numeric", ref.n, sk.n)
            scores = _sketch_scores(ref, sk, config.scipy_p_value(stat))
            feats[name] = _decide(config, name, "numeric", ref.n, sk.n, scores)
        elif isinstance(ref, CategoricalProfile) and isinstance(sk, CategoricalSketch):
            feats[name] = _decide(
                config, name, "categorical", ref.n, sk.n, _categorical_scores(ref.counts, sk.counts)
            )
        else:
            raise DriftInputError(
                f"feature {name!r} summary kind differs from the profile", feature=name, rule="kind"
            )
    return _result(profile, feats, config, "summary", summary.rows)
