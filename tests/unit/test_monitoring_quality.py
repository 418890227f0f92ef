"""Quality aggregation from labeled records and the pushed gauges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from prometheus_client import generate_latest

from driftloop.drift import build_profile, detect
from driftloop.events import DriftDetectedData
from driftloop.monitoring import metrics
from driftloop.monitoring.check import drift_event_data
from driftloop.monitoring.quality import QualityStat, aggregate, over_time


def test_aggregate_by_model_version_metric_and_reward() -> None:
    recs = [
        {"model": "speech", "version": "1", "metric": "wer", "quality": 0.2, "reward": 1},
        {"model": "speech", "version": "1", "metric": "wer", "quality": 0.4},
        {"model": "speech", "version": "2", "metric": "wer", "quality": 0.1, "reward": 0.0},
        {"model": "speech", "metric": "wer", "quality": float("nan")},
        {"model": "speech", "version": "1", "metric": "wer", "quality": "bad", "reward": True},
        {"model": "ocr", "version": "1", "metric": "cer", "quality": 0.5},
        {"version": "1", "quality": 1.0},
    ]
    got = aggregate(recs, model="speech")
    assert got == [
        QualityStat("speech", "1", "reward", 1.0, 1),
        QualityStat("speech", "1", "wer", 0.30000000000000004, 2),
        QualityStat("speech", "2", "reward", 0.0, 1),
        QualityStat("speech", "2", "wer", 0.1, 1),
    ]
    assert {s.model for s in aggregate(recs)} == {"speech", "ocr"}


def test_over_time_buckets() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pts = [
        (
            t0 + timedelta(minutes=m),
            {"model": "m", "version": "1", "metric": "accuracy", "quality": float(m < 60)},
        )
        for m in range(120)
    ]
    got = over_time(pts, model="m", bucket_s=3600)
    assert [(t.hour, s.mean, s.count) for t, s in got] == [(0, 1.0, 60), (1, 0.0, 60)]


def test_registry_holds_documented_metric_names() -> None:
    rng = np.random.default_rng(0)
    profile = build_profile({"x": rng.normal(size=500), "c": rng.choice(["a", "b"], 500)})
    result = detect(profile, {"x": rng.normal(2, 1, 500), "c": rng.choice(["a"], 500)})
    reg = metrics.check_registry(
        "digits", "3", result, [QualityStat("digits", "3", "accuracy", 0.9, 70)], now=123.0
    )
    text = generate_latest(reg).decode()
    for name in (
        metrics.DRIFT_SCORE,
        metrics.DRIFT_THRESHOLD,
        metrics.DRIFT_FEATURE_DRIFTED,
        metrics.DRIFT_DETECTED,
        metrics.DRIFT_SHARE,
        metrics.DRIFT_WINDOW_ROWS,
        metrics.DRIFT_LAST_CHECK,
        metrics.QUALITY,
        metrics.QUALITY_SAMPLES,
    ):
        assert f"\n{name}{{" in text or text.startswith(f"{name}{{") or f"# TYPE {name} " in text
    assert 'driftloop_drift_detected{model="digits",version="3"} 1.0' in text
    assert (
        'driftloop_drift_score{feature="x",model="digits",statistic="ks_p_value",version="3"}'
        in text
    )
    assert 'driftloop_quality_samples{metric="accuracy",model="digits",version="3"} 70.0' in text
    data = drift_event_data("digits", "3", result, {"preprocessed": 500})
    parsed = DriftDetectedData.parse(data.to_data())
    assert parsed.model == "digits" and set(parsed.features) == {"x", "c"}


def test_window_columns_match_bare_and_prefixed_output_names() -> None:
    from driftloop.monitoring.window import columns

    rows = [
        {"brightness": 0.5},
        {"output.label": 3.0, "output.confidence": 0.9},
        {"output.label": 4.0, "output.confidence": 0.7},
    ]
    cols = columns(rows, ["brightness", "label", "output.confidence", "missing"])
    assert set(cols) == {"brightness", "label", "output.confidence"}
    assert cols["label"].tolist() == [3.0, 4.0]
    assert cols["output.confidence"].tolist() == [0.9, 0.7]


def test_registry_holds_the_estimated_quality() -> None:
    from driftloop.monitoring.estimate import Estimate

    reg = metrics.check_registry(
        "digits", "3", None, now=1.0,
        estimated=[Estimate("digits", "3", "accuracy", 0.8, 120),
                   Estimate("digits", "4", "accuracy", 0.6, 40)],
    )
    text = generate_latest(reg).decode()
    assert 'driftloop_quality_estimated{metric="accuracy",model="digits",version="3"} 0.8' in text
    assert 'driftloop_quality_estimated{metric="accuracy",model="digits",version="4"} 0.6' in text
    n = 'driftloop_quality_estimated_samples{metric="accuracy",model="digits",version="4"} 40.0'
    assert n in text
    # no estimate: no series (an absent figure, never a zero)
    empty = generate_latest(metrics.check_registry("digits", "3", None, now=1.0)).decode()
    assert metrics.QUALITY_ESTIMATED not in empty
