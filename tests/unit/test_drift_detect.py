"""Verdicts: shifted features flagged, unshifted not, from 10^3 to 10^6 rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sp

from driftloop.drift import (
    DriftConfig,
    DriftInputError,
    FeatureRule,
    ReferenceProfile,
    build_profile,
    detect,
)


def _frame(rng: np.random.Generator, n: int, shifts: dict[str, float]) -> dict[str, np.ndarray]:
    return {name: rng.normal(shift, 1.0, size=n) for name, shift in shifts.items()}


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000, 1_000_000])
def test_shifted_flagged_unshifted_not(n: int) -> None:
    rng = np.random.default_rng(n)
    names = {"same_a": 0.0, "same_b": 0.0, "tiny": 0.02, "shifted": 0.5, "scaled": 0.0}
    ref = _frame(rng, n, dict.fromkeys(names, 0.0))
    cur = _frame(rng, n, names)
    cur["scaled"] = rng.normal(0.0, 2.0, size=n)
    result = detect(build_profile(ref), cur)
    drifted = set(result.drifted_features)
    assert drifted == {"shifted", "scaled"}
    stat = "ks" if n <= 1000 else "wasserstein"
    assert {f.statistic for f in result.features.values()} == {stat}
    assert result.share_drifted == pytest.approx(2 / 5)
    assert result.dataset_drift is False


def test_p_values_flag_tiny_shifts_at_large_n_but_defaults_do_not() -> None:
    """Why distances decide at large N: a 0.02 SD shift is 'significant' at 10^6 rows."""
    rng = np.random.default_rng(7)
    n = 1_000_000
    ref = _frame(rng, n, {"a": 0.0, "b": 0.0})
    cur = _frame(rng, n, {"a": 0.02, "b": 0.02})
    profile = build_profile(ref, max_sample=None)
    by_default = detect(profile, cur)
    assert by_default.drifted_features == []
    assert all(f.scores["psi"] < 0.1 for f in by_default.features.values())
    p_rules = {k: FeatureRule(statistic="ks") for k in ("a", "b")}
    by_pvalue = detect(profile, cur, DriftConfig(features=p_rules))
    assert by_pvalue.drifted_features == ["a", "b"]


def test_scores_equal_scipy_on_full_reference() -> None:
    rng = np.random.default_rng(11)
    ref = {"x": rng.normal(size=20_000)}
    cur = {"x": rng.normal(0.1, 1.2, size=15_000)}
    profile = build_profile(ref, max_sample=None)
    f = detect(profile, cur, DriftConfig(ks_p_value="scipy")).features["x"]
    want = sp.ks_2samp(ref["x"], cur["x"])
    assert abs(f.scores["ks"] - want.statistic) <= 1e-9
    assert abs(f.scores["ks_p_value"] - want.pvalue) <= 1e-9
    # Where a distance decides, the limit-distribution p-value is reported instead.
    default = detect(profile, cur).features["x"].scores
    assert "ks_p_value" not in default
    assert default["ks_p_value_limit"] == pytest.approx(want.pvalue, abs=0.01)
    w = sp.wasserstein_distance(ref["x"], cur["x"]) / np.std(ref["x"])
    assert f.scores["wasserstein"] == pytest.approx(w, rel=1e-9)


def test_overrides_per_feature_and_dataset_rule() -> None:
    rng = np.random.default_rng(5)
    ref = _frame(rng, 5_000, {"a": 0, "b": 0, "c": 0})
    cur = _frame(rng, 5_000, {"a": 0.3, "b": 0.3, "c": 0.0})
    profile = build_profile(ref)
    base = detect(profile, cur)
    assert base.drifted_features == ["a", "b"] and base.dataset_drift
    cfg = DriftConfig(features={"a": FeatureRule("psi", 0.5), "c": FeatureRule(threshold=0.0)})
    res = detect(profile, cur, cfg)
    assert res.features["a"].statistic == "psi" and res.features["a"].threshold == 0.5
    assert res.features["c"].statistic == "wasserstein" and res.features["c"].drifted
    assert detect(profile, cur, DriftConfig(drift_share=0.9)).dataset_drift is False
    with pytest.raises(DriftInputError):
        detect(profile, cur, DriftConfig(features={"a": FeatureRule("chi2")}))
    with pytest.raises(DriftInputError):
        detect(profile, cur, DriftConfig(features={"nope": FeatureRule("psi")}))


def test_categorical_features() -> None:
    rng = np.random.default_rng(9)
    cats = np.array(["red", "green", "blue"])
    ref = {
        "color": rng.choice(cats, 5_000, p=[0.5, 0.3, 0.2]),
        "same": rng.choice(cats, 5_000),
        "x": rng.normal(size=5_000),
    }
    cur = {
        "color": rng.choice(cats, 4_000, p=[0.2, 0.3, 0.5]),
        "same": rng.choice(cats, 4_000),
        "x": rng.normal(size=4_000),
    }
    res = detect(build_profile(ref), cur)
    assert res.features["color"].kind == "categorical"
    assert res.features["color"].statistic == "jensenshannon"
    assert res.drifted_features == ["color"]
    small = detect(
        build_profile({k: v[:500] for k, v in ref.items()}), {k: v[:400] for k, v in cur.items()}
    )
    assert small.features["color"].statistic == "chi2" and small.features["color"].drifted
    assert not small.features["same"].drifted


def test_result_shape_is_stable_json() -> None:
    rng = np.random.default_rng(1)
    res = detect(build_profile({"x": rng.normal(size=2_000)}), {"x": rng.normal(size=2_000)})
    doc = json.loads(json.dumps(res.to_dict()))
    assert set(doc) == {"data", "meta"}
    assert set(doc["data"]) == {
        "dataset_drift",
        "share_drifted",
        "n_drifted",
        "n_features",
        "features",
    }
    assert doc["meta"]["name"] == "driftloop.drift" and doc["meta"]["mode"] == "exact"
    feat = doc["data"]["features"]["x"]
    assert {"statistic", "value", "threshold", "drifted", "scores", "stattype"} <= set(feat)
    verdict = res.verdict()
    assert set(verdict["features"]["x"]) == {"statistic", "value", "threshold", "drifted"}


def test_bad_windows_raise_clear_errors() -> None:
    rng = np.random.default_rng(2)
    profile = build_profile({"x": rng.normal(size=100), "y": rng.normal(size=100)})
    with pytest.raises(DriftInputError, match="lacks features") as e:
        detect(profile, {"x": [1.0, 2.0]})
    assert e.value.feature == "y"
    with pytest.raises(DriftInputError, match="no values") as e:
        detect(profile, {"x": [], "y": [1.0]})
    assert e.value.rule == "empty"
    with pytest.raises(DriftInputError, match="NaN") as e:
        detect(profile, {"x": [1.0, float("nan")], "y": [1.0]})
    assert e.value.feature == "x" and e.value.rule == "finite"
    ok = detect(
        profile, {"x": [0.1, float("nan"), 0.3], "y": [1.0]}, DriftConfig(nan_policy="omit")
    )
    assert ok.features["x"].n_current == 2
    with pytest.raises(DriftInputError, match="not numeric"):
        detect(profile, {"x": ["a", "b"], "y": [1.0]})
    with pytest.raises(DriftInputError):
        build_profile({})


def test_profile_round_trips_through_json() -> None:
    rng = np.random.default_rng(4)
    ref = {"x": rng.normal(size=3_000), "c": rng.choice(["a", "b"], 3_000)}
    cur = {"x": rng.normal(0.2, 1, size=1_000), "c": rng.choice(["a", "b"], 1_000)}
    profile = build_profile(ref, max_sample=1_000, source="train")
    again = ReferenceProfile.from_json(profile.to_json())
    assert again.source == "train" and again.rows == 3_000
    assert detect(profile, cur).to_dict()["data"] == detect(again, cur).to_dict()["data"]
    assert again.features["x"].sampled and again.features["x"].sample.size == 1_000
    with pytest.raises(DriftInputError):
        ReferenceProfile.from_json(b'{"profile_version": 99}')
    with pytest.raises(DriftInputError):
        ReferenceProfile.from_json(b"not json")
