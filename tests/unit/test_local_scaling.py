"""The local dispatcher sizes its consumers from the annotations the cluster's autoscaler reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from driftloop.local.eventing.manifests import EventingError, build_eventing, load_documents
from driftloop.local.scaling import (
    CLASS,
    KEDA_CLASS,
    LAG_THRESHOLD,
    MAX_SCALE,
    MIN_SCALE,
    Scaler,
    Scaling,
    ScalingError,
    consumer_count,
    parse_scaling,
    share,
)

ROOT = Path(__file__).resolve().parents[2]


def test_unannotated_or_disabled_resources_keep_one_consumer():
    assert parse_scaling(None) == Scaling() and not Scaling().enabled
    assert parse_scaling({CLASS: "disabled", MAX_SCALE: "9"}) == Scaling()
    assert consumer_count(10_000, 6, Scaling()) == 1


def test_annotations_parse_with_upstream_defaults_and_reject_nonsense():
    s = parse_scaling({CLASS: KEDA_CLASS, MAX_SCALE: "4", LAG_THRESHOLD: "10"})
    assert (s.enabled, s.min_scale, s.max_scale, s.lag_threshold) == (True, 0, 4, 10)
    assert (s.polling_interval_s, s.cooldown_s) == (10.0, 30.0)  # autoscaler_api.go defaults
    assert parse_scaling({CLASS: KEDA_CLASS}).max_scale == 50
    with pytest.raises(ScalingError, match="lag-threshold"):
        parse_scaling({CLASS: KEDA_CLASS, LAG_THRESHOLD: "many"}, "KafkaSource/x")
    with pytest.raises(ScalingError, match="neither"):
        parse_scaling({CLASS: "kpa.autoscaling.knative.dev"})
    with pytest.raises(ScalingError, match="above"):
        parse_scaling({CLASS: KEDA_CLASS, MIN_SCALE: "3", MAX_SCALE: "2"})


@pytest.mark.parametrize(
    ("lag", "partitions", "want"),
    [
        (0, 6, 1),  # idle: one consumer locally (a cluster scales to zero)
        (1, 6, 1),
        (50, 6, 1),
        (51, 6, 2),  # one more per lag-threshold records
        (149, 6, 3),
        (10_000, 6, 3),  # capped by max-scale
        (10_000, 2, 2),  # and by the partitions
    ],
)
def test_consumer_count_follows_lag_threshold_and_max_scale(lag, partitions, want):
    s = parse_scaling({CLASS: KEDA_CLASS, MAX_SCALE: "3", LAG_THRESHOLD: "50"})
    assert consumer_count(lag, partitions, s) == want


def test_partitions_are_shared_without_overlap():
    parts = list(range(7))
    shares = [share(parts, i, 3) for i in range(3)]
    assert sorted(p for s in shares for p in s) == parts
    assert shares[0] == [0, 3, 6]


def test_scaler_goes_up_at_once_and_down_after_the_cooldown():
    now = [0.0]
    have = {"r": 1}
    s = parse_scaling(
        {
            CLASS: KEDA_CLASS,
            MAX_SCALE: "3",
            LAG_THRESHOLD: "10",
            "autoscaling.eventing.knative.dev/cooldown-period": "60",
        }
    )
    scaler = Scaler([], stop=None, current=lambda name: have[name], clock=lambda: now[0])  # type: ignore[arg-type]
    assert scaler.step("r", s, 25, 6, None) == (3, None)
    have["r"] = 3
    new, since = scaler.step("r", s, 0, 6, None)
    assert (new, since) == (None, 0.0)
    now[0] = 59.0
    assert scaler.step("r", s, 0, 6, since) == (None, 0.0)
    now[0] = 60.0
    assert scaler.step("r", s, 0, 6, since) == (1, None)


def test_repo_sources_and_triggers_are_sized_by_their_annotations():
    eventing = build_eventing(load_documents(ROOT / "eventing"))
    by_name = {r.name: r for r in eventing.routes}
    dc = by_name["drift-check"].scaling
    assert dc.enabled and (dc.max_scale, dc.lag_threshold, dc.min_scale) == (3, 50, 0)
    triggers = [r for r in eventing.routes if r.broker]
    assert triggers and all(r.scaling.enabled and r.scaling.max_scale == 1 for r in triggers)


def test_bad_scaling_annotation_is_an_eventing_error(tmp_path):
    doc = {
        "apiVersion": "sources.knative.dev/v1",
        "kind": "KafkaSource",
        "metadata": {"name": "s", "annotations": {CLASS: KEDA_CLASS, MAX_SCALE: "lots"}},
        "spec": {"topics": ["t"], "sink": {"ref": {"kind": "Service", "name": "x"}}},
    }
    with pytest.raises(EventingError, match="max-scale"):
        build_eventing([(tmp_path / "30-s.yaml", doc)])
