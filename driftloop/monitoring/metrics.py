"""The metrics drift-check pushes to the Pushgateway, and the push itself.

Every check of one model replaces that model's group (job ``driftloop-drift-check``,
grouping key ``model``), so stale features or versions disappear with the next push.

Gauges (labels in braces):

- ``driftloop_drift_score{model,version,feature,statistic}``: every statistic computed
  (ks, ks_p_value, psi, wasserstein, wasserstein_raw; chi2_p_value, chi2_statistic,
  jensenshannon, linf for categorical features).
- ``driftloop_drift_threshold{model,version,feature,statistic}``: threshold of the
  statistic that decides for the feature.
- ``driftloop_drift_feature_drifted{model,version,feature}``: 1 drifted, 0 not.
- ``driftloop_drift_detected{model,version}``: 1 when the dataset drifts.
- ``driftloop_drift_share{model,version}``: share of drifted features.
- ``driftloop_drift_window_rows{model,version}``: rows in the current window.
- ``driftloop_drift_last_check_timestamp_seconds{model,version}``: unix time of the check.
- ``driftloop_quality{model,version,metric}``: mean quality over the window (accuracy,
  wer, cer, iou from labeled feedback; reward).
- ``driftloop_quality_samples{model,version,metric}``: labeled records behind it.
- ``driftloop_quality_estimated{model,version,metric}``: quality expected from the window's
  prediction confidences through the version's calibration, before labels arrive
  (``driftloop.monitoring.estimate``; ``metric`` is the family's, as on driftloop_quality).
- ``driftloop_quality_estimated_samples{model,version,metric}``: predictions behind it.
- ``driftloop_drift_missing_values{model,version,feature}``: values of the feature the
  window lacked (null, NaN, non-finite) and the check left out.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import delete_from_gateway, push_to_gateway

from driftloop.drift import DriftResult
from driftloop.errors import Unavailable
from driftloop.monitoring.estimate import Estimate
from driftloop.monitoring.quality import QualityStat

JOB = "driftloop-drift-check"
DRIFT_SCORE = "driftloop_drift_score"
DRIFT_THRESHOLD = "driftloop_drift_threshold"
DRIFT_FEATURE_DRIFTED = "driftloop_drift_feature_drifted"
DRIFT_DETECTED = "driftloop_drift_detected"
DRIFT_SHARE = "driftloop_drift_share"
DRIFT_WINDOW_ROWS = "driftloop_drift_window_rows"
DRIFT_LAST_CHECK = "driftloop_drift_last_check_timestamp_seconds"
QUALITY = "driftloop_quality"
QUALITY_SAMPLES = "driftloop_quality_samples"
DRIFT_MISSING_VALUES = "driftloop_drift_missing_values"
QUALITY_ESTIMATED = "driftloop_quality_estimated"
QUALITY_ESTIMATED_SAMPLES = "driftloop_quality_estimated_samples"


def check_registry(
    model: str,
    version: str,
    drift: DriftResult | None,
    quality: Iterable[QualityStat] = (),
    *,
    now: float | None = None,
    missing_values: Mapping[str, int] | None = None,
    estimated: Iterable[Estimate] = (),
) -> CollectorRegistry:
    """A fresh registry holding one check's drift and quality gauges."""
    reg = CollectorRegistry()
    if missing_values:
        gone = Gauge(
            DRIFT_MISSING_VALUES,
            "Values of a feature missing from the window (null, NaN), left out of the check.",
            ["model", "version", "feature"],
            registry=reg,
        )
        for name, n in missing_values.items():
            gone.labels(model, version, name).set(n)
    if drift is not None:
        score = Gauge(
            DRIFT_SCORE,
            "Drift statistic of one feature (current vs reference).",
            ["model", "version", "feature", "statistic"],
            registry=reg,
        )
        threshold = Gauge(
            DRIFT_THRESHOLD,
            "Threshold of the statistic that decides drift.",
            ["model", "version", "feature", "statistic"],
            registry=reg,
        )
        drifted = Gauge(
            DRIFT_FEATURE_DRIFTED,
            "1 when the feature drifted.",
            ["model", "version", "feature"],
            registry=reg,
        )
        for name, f in drift.features.items():
            for stat, value in f.scores.items():
                score.labels(model, version, name, stat).set(value)
            threshold.labels(model, version, name, f.statistic).set(f.threshold)
            drifted.labels(model, version, name).set(1 if f.drifted else 0)
        Gauge(
            DRIFT_DETECTED,
            "1 when the share of drifted features reaches the drift share.",
            ["model", "version"],
            registry=reg,
        ).labels(model, version).set(1 if drift.dataset_drift else 0)
        Gauge(DRIFT_SHARE, "Share of drifted features.", ["model", "version"], registry=reg).labels(
            model, version
        ).set(drift.share_drifted)
        Gauge(
            DRIFT_WINDOW_ROWS, "Rows in the current window.", ["model", "version"], registry=reg
        ).labels(model, version).set(drift.meta["current"]["rows"])
    Gauge(
        DRIFT_LAST_CHECK,
        "Unix time of the last drift-check run.",
        ["model", "version"],
        registry=reg,
    ).labels(model, version).set(now if now is not None else time.time())
    q = Gauge(
        QUALITY,
        "Mean quality from labeled feedback over the window.",
        ["model", "version", "metric"],
        registry=reg,
    )
    qn = Gauge(
        QUALITY_SAMPLES,
        "Labeled records behind driftloop_quality.",
        ["model", "version", "metric"],
        registry=reg,
    )
    for s in quality:
        q.labels(s.model, s.version, s.metric).set(s.mean)
        qn.labels(s.model, s.version, s.metric).set(s.count)
    estimates = list(estimated)
    if estimates:
        qe = Gauge(
            QUALITY_ESTIMATED,
            "Quality expected from prediction confidences (calibrated), before labels.",
            ["model", "version", "metric"],
            registry=reg,
        )
        qen = Gauge(
            QUALITY_ESTIMATED_SAMPLES,
            "Predictions behind driftloop_quality_estimated.",
            ["model", "version", "metric"],
            registry=reg,
        )
        for e in estimates:
            qe.labels(e.model, e.version, e.metric).set(e.value)
            qen.labels(e.model, e.version, e.metric).set(e.count)
    return reg


def push(
    gateway_url: str, model: str, registry: CollectorRegistry, *, timeout_s: float = 10
) -> None:
    """Replace the model's group on the Pushgateway; ``Unavailable`` when it cannot be reached."""
    try:
        push_to_gateway(
            gateway_url,
            job=JOB,
            registry=registry,
            grouping_key={"model": model},
            timeout=timeout_s,
        )
    except OSError as e:
        raise Unavailable(f"Pushgateway at {gateway_url} unavailable: {e}") from e


def delete(gateway_url: str, model: str, *, timeout_s: float = 10) -> None:
    """Remove a model's group (e.g. when the model is retired)."""
    try:
        delete_from_gateway(gateway_url, job=JOB, grouping_key={"model": model}, timeout=timeout_s)
    except OSError as e:
        raise Unavailable(f"Pushgateway at {gateway_url} unavailable: {e}") from e
