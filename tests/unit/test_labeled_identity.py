"""Labeled-record identity and the correction rule, and the agreed Kafka record limit."""

from __future__ import annotations

from pathlib import Path

import yaml

from driftloop import bus, events, labeled
from driftloop.monitoring.quality import aggregate
from driftloop.settings import PROJECT_ROOT, Settings


def rec(pid: str, fid: str, source: str, time: str, truth: object = "3",
        quality: float | None = 1.0, reward: float | None = None) -> dict:
    return {"prediction_id": pid, "feedback_id": fid, "feedback_source": source,
            "feedback_time": time, "model": "digits", "version": "1", "truth": truth,
            "metric": "accuracy", "quality": quality, "reward": reward}


def test_identity_is_the_true_source_and_id():
    a = labeled.identity("driftloop/flink/join", "x", events.LABELED,
                         {"feedback_source": "app-a", "feedback_id": "fb-1"})
    b = labeled.identity("driftloop/flink/join", "x", events.LABELED,
                         {"feedback_source": "app-b", "feedback_id": "fb-1"})
    assert a != b
    assert labeled.labeled_id("app-a", "fb-1") != labeled.labeled_id("app-b", "fb-1")
    # No separator trick makes two different (source, id) pairs equal.
    assert labeled.identity("a\x1fb", "c", None, None) != labeled.identity("a", "b\x1fc",
                                                                        None, None)
    assert labeled.identity("s", "i", events.FEEDBACK, {}) == labeled.identity(
        "s", "i", events.FEEDBACK, {"feedback_id": "other"})


def test_latest_correction_wins_and_counts_once():
    first = rec("P1", "f1", "app", "2026-01-01T00:00:01Z", truth="3", quality=1.0)
    second = rec("P1", "f2", "app", "2026-01-01T00:00:02Z", truth="5", quality=0.0)
    reward_only = rec("P1", "f3", "app", "2026-01-01T00:00:03Z", truth=None, quality=None,
                      reward=0.5)
    other = rec("P2", "f1", "other-app", "2026-01-01T00:00:00Z", quality=1.0)
    for order in ([first, second, reward_only, other], [other, reward_only, second, first]):
        won = labeled.latest_per_prediction(order, lambda r: r)
        assert sorted(r["feedback_id"] for r in won) == ["f1", "f2"]  # P2's f1, P1's f2
        stats = {s.metric: (s.mean, s.count) for s in aggregate(order, model="digits")}
        assert stats["accuracy"] == (0.5, 2)  # P1 once (corrected to wrong), P2 once
        assert stats["reward"] == (0.5, 1)


def test_record_limits_agree_end_to_end():
    s = Settings()
    assert s.intake_max_body_bytes < s.kafka_max_message_bytes
    topic_limit = int(bus.topic_configs(s)["max.message.bytes"])
    assert topic_limit > s.kafka_max_message_bytes
    manifests = sorted(Path(PROJECT_ROOT, "infra/k8s/base").glob("2*-kafkatopic-*.yaml"))
    assert manifests
    for path in manifests:
        doc = yaml.safe_load(path.read_text())
        assert int(doc["spec"]["config"]["max.message.bytes"]) == topic_limit, path.name
