"""Calibration and the confidence-based quality estimate (pure, known cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftloop.blob import open_store
from driftloop.monitoring.estimate import (
    Calibration,
    CalibrationError,
    estimate,
    fit_histogram,
    fit_isotonic,
    labeled_pairs,
    load_calibration,
    save_calibration,
)
from driftloop.settings import Settings


def test_isotonic_keeps_monotone_data_and_pools_violators() -> None:
    cal = fit_isotonic([0.1, 0.2, 0.3, 0.4], [0.0, 1.0, 0.0, 1.0])
    # (0.2, 1) and (0.3, 0) violate: pooled into one block over [0.2, 0.3] at y=0.5
    assert cal.predict([0.1, 0.2, 0.25, 0.3, 0.4]) == pytest.approx([0.0, 0.5, 0.5, 0.5, 1.0])
    assert cal.x[0] == 0.1 and cal.x[-1] == 0.4 and np.all(np.diff(cal.y) >= 0)
    assert cal.predict([0.0, 0.1, 0.15, 0.25, 0.4, 0.9]) == pytest.approx(
        [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    )


def test_isotonic_matches_scikit_learn() -> None:
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(3)
    s = rng.uniform(0, 1, 400)
    q = (rng.uniform(0, 1, 400) < s).astype(float)
    ours = fit_isotonic(s, q)
    ref = IsotonicRegression(out_of_bounds="clip").fit(s, q)
    grid = np.linspace(0, 1, 101)
    # step fit values agree at the data points; between them both interpolate
    assert ours.predict(s) == pytest.approx(ref.predict(s), abs=0.13)
    assert abs(float(ours.predict(grid).mean() - ref.predict(grid).mean())) < 0.02
    assert np.all(np.diff(ours.predict(grid)) >= 0)


def test_isotonic_decreasing_for_error_rates() -> None:
    cal = fit_isotonic([0.2, 0.5, 0.9], [0.8, 0.3, 0.05], increasing=False, metric="wer")
    assert cal.predict([0.2, 0.5, 0.9]) == pytest.approx([0.8, 0.3, 0.05])
    assert np.all(np.diff(cal.y) <= 0)
    up = fit_isotonic([0.2, 0.5, 0.9], [0.8, 0.3, 0.05], increasing=True)
    # an increasing fit of a falling relation is flat over the whole range
    assert set(np.round(up.y, 6)) == {0.383333}


def test_prior_takes_over_where_the_reference_is_thin_or_silent() -> None:
    # 100 pairs at confidence 0.9, all right; 1 pair at 0.5, right too
    s, q = [0.9] * 100 + [0.5], [1.0] * 101
    plain = fit_isotonic(s, q)
    assert plain.predict([0.2, 0.5, 0.9]) == pytest.approx([1.0, 1.0, 1.0])
    cal = fit_isotonic(s, q, prior="confidence", prior_weight=4)
    got = cal.predict([0.2, 0.5, 0.9])
    assert got[0] == pytest.approx(0.2)  # below what the reference saw: the claim alone
    assert got[1] == pytest.approx((1 * 1.0 + 4 * 0.5) / 5)  # one pair beside 4 of prior
    assert got[2] == pytest.approx((100 * 1.0 + 4 * 0.9) / 104)
    # between them the reference's block says 1.0, but no pair lies near 0.7: the claim
    assert cal.predict([0.7]) == pytest.approx([0.7])
    wer = fit_isotonic([0.8] * 50, [0.1] * 50, increasing=False, prior="complement")
    assert wer.predict([0.3]) == pytest.approx([0.7])  # an error rate: 1 - confidence


def test_ties_in_confidence_are_one_point() -> None:
    cal = fit_isotonic([0.5, 0.5, 0.5, 0.9], [1.0, 0.0, 0.0, 1.0])
    assert cal.predict([0.5]) == pytest.approx([1 / 3])


def test_histogram_binning_maps_each_bin_to_its_mean() -> None:
    s = np.arange(100) / 100.0
    q = (s >= 0.5).astype(float)
    cal = fit_histogram(s, q, bins=4)
    assert cal.y == pytest.approx((0.0, 0.0, 1.0, 1.0))
    assert cal.predict([0.0, 0.49, 0.5, 0.99, 2.0]) == pytest.approx([0, 0, 1, 1, 1])


def test_histogram_with_few_distinct_confidences_drops_empty_bins() -> None:
    cal = fit_histogram([1.0] * 30 + [0.5] * 10, [1.0] * 30 + [0.0] * 10, bins=10)
    assert cal.predict([0.5, 1.0]) == pytest.approx([0.0, 1.0])


@pytest.mark.parametrize(("method", "shifted"), [("isotonic", (2, 2)), ("histogram", (4, 2))])
def test_estimate_of_a_calibrated_model_is_its_accuracy(
    method: str, shifted: tuple[int, int]
) -> None:
    rng = np.random.default_rng(7)
    ref = rng.beta(5, 2, 2000)
    cal = (
        fit_isotonic(ref, rng.uniform(size=ref.size) < ref)
        if method == "isotonic"
        else fit_histogram(ref, rng.uniform(size=ref.size) < ref)
    )
    # a shifted window: lower confidences, still calibrated (equal-count bins are coarse
    # where the reference had few confidences: the histogram is held to a milder shift)
    cur = rng.beta(*shifted, 2000)
    realized = float((rng.uniform(size=cur.size) < cur).mean())
    est = estimate(cal, cur, model="digits", version="2")
    assert est is not None and est.count == 2000
    assert abs(est.value - realized) < 0.04


def test_estimate_needs_a_finite_confidence() -> None:
    cal = fit_isotonic([0.1, 0.9], [0.0, 1.0])
    assert estimate(cal, [], model="m", version="1") is None
    assert estimate(cal, [float("nan")], model="m", version="1") is None


def test_fit_refuses_what_it_cannot_fit() -> None:
    with pytest.raises(CalibrationError):
        fit_isotonic([], [])
    with pytest.raises(CalibrationError):
        fit_isotonic([0.1, 0.2], [1.0])
    with pytest.raises(CalibrationError):
        fit_histogram([0.1], [1.0], bins=0)


def test_json_round_trip_and_malformed() -> None:
    cal = fit_histogram(np.linspace(0, 1, 50), np.linspace(0, 1, 50) > 0.3, bins=5)
    assert Calibration.from_json(cal.to_json()) == cal
    for bad in (
        b"{",
        b'{"method": "magic", "x": [0], "y": [1], "samples": 1}',
        b'{"method": "isotonic", "x": [0, 1], "y": [1], "samples": 1}',
        b'{"method": "isotonic", "x": [1, 0], "y": [1, 0], "samples": 1}',
    ):
        with pytest.raises(CalibrationError):
            Calibration.from_json(bad)


def _labeled(pid: str, version: str, conf: float, quality: float, t: str) -> dict[str, object]:
    return {
        "model": "digits",
        "version": version,
        "prediction_id": pid,
        "metric": "accuracy",
        "output": {"label": 1, "confidence": conf},
        "quality": quality,
        "feedback_time": t,
        "feedback_source": "app",
        "feedback_id": pid + t,
    }


def test_labeled_pairs_one_per_prediction_latest_wins() -> None:
    recs = [
        _labeled("p1", "1", 0.9, 0.0, "2026-01-01T00:00:00Z"),
        _labeled("p1", "1", 0.9, 1.0, "2026-01-01T00:01:00Z"),  # the correction
        _labeled("p2", "1", 0.4, 0.0, "2026-01-01T00:00:00Z"),
        _labeled("p3", "2", 0.7, 1.0, "2026-01-01T00:00:00Z"),  # another version
        {**_labeled("p4", "1", 0.5, 1.0, "2026-01-01T00:00:00Z"), "output": {"label": 1}},
    ]
    conf, qual = labeled_pairs(recs, model="digits", version="1", metric="accuracy")
    assert sorted(zip(conf, qual, strict=True)) == [(0.4, 0.0), (0.9, 1.0)]


def test_calibration_is_stored_once(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}", Settings())
    assert load_calibration(store, "digits", "1") is None
    first = fit_isotonic([0.1, 0.9], [0.0, 1.0])
    assert save_calibration(store, "digits", "1", first)
    assert not save_calibration(store, "digits", "1", fit_isotonic([0.1, 0.9], [1.0, 1.0]))
    assert load_calibration(store, "digits", "1") == first
