"""Streaming summaries: mergeable, bounded memory, close to the exact check."""

from __future__ import annotations

import numpy as np
import pytest

from driftloop.drift import WindowSummary, build_profile, detect, detect_summary, summarize


def _data(rng: np.random.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    return {
        "x": rng.normal(shift, 1.0, size=n),
        "y": rng.exponential(1.0, size=n),
        "c": rng.choice(
            ["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2] if shift == 0 else [0.2, 0.3, 0.5]
        ),
    }


def test_merge_of_parts_equals_summary_of_whole() -> None:
    rng = np.random.default_rng(0)
    profile = build_profile(_data(rng, 5_000, 0.0))
    batches = [_data(rng, 1_000, 0.3) for _ in range(6)]
    whole = summarize(profile, batches)
    left = summarize(profile, batches[:2])
    right = summarize(profile, batches[2:])
    merged = left.merge(right)
    assert merged.to_dict()["x"]["counts"] == whole.to_dict()["x"]["counts"]
    assert merged.to_dict()["c"] == whole.to_dict()["c"]
    assert merged.rows == whole.rows == 6_000
    assert detect_summary(profile, merged).data == detect_summary(profile, whole).data


def test_memory_does_not_grow_with_rows() -> None:
    rng = np.random.default_rng(1)
    profile = build_profile(_data(rng, 5_000, 0.0))
    summary = WindowSummary.empty(profile)
    for _ in range(20):
        summary.update(_data(rng, 10_000, 0.0))
    doc = summary.to_dict()
    assert len(doc["x"]["counts"]) == profile.features["x"].grid_edges.size + 1
    assert len(doc["c"]["counts"]) == 3
    assert summary.rows == 200_000


@pytest.mark.parametrize("shift", [0.0, 0.5])
def test_summary_verdict_matches_exact(shift: float) -> None:
    rng = np.random.default_rng(2)
    profile = build_profile(_data(rng, 50_000, 0.0), max_sample=None)
    cur = _data(rng, 40_000, shift)
    exact = detect(profile, cur)
    approx = detect_summary(profile, summarize(profile, [cur]))
    assert approx.drifted_features == exact.drifted_features
    for name in ("x", "y"):
        e, a = exact.features[name].scores, approx.features[name].scores
        assert a["psi"] == pytest.approx(e["psi"], rel=1e-9, abs=1e-12)  # same bins: exact
        assert a["ks"] <= e["ks"] + 1e-12
        assert a["ks"] >= e["ks"] - 0.01
        assert a["wasserstein"] == pytest.approx(e["wasserstein"], abs=0.03)
    assert approx.meta["mode"] == "summary"


def test_categorical_sketch_caps_distinct_labels() -> None:
    from driftloop.drift import CategoricalSketch

    sk = CategoricalSketch(max_categories=3)
    sk.update([str(i) for i in range(10)])
    assert len(sk.counts) == 4 and sk.counts["__other__"] == 7 and sk.n == 10
