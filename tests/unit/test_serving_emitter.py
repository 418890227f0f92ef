"""The prediction emitter never blocks an inference: a full queue drops and counts."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from driftloop import events
from driftloop.errors import Unavailable
from driftloop.serving.emitter import PredictionEmitter


def _unreachable():
    raise Unavailable("Kafka at 127.0.0.1:1 unavailable")


def test_offers_return_at_once_and_overflow_is_counted_when_kafka_is_down():
    registry = CollectorRegistry()
    emitter = PredictionEmitter(_unreachable, maxsize=5, registry=registry)
    try:
        start = time.perf_counter()
        accepted = [emitter.offer(events.new_event(events.PREDICTION, "t", {"i": i}))
                    for i in range(50)]
        assert time.perf_counter() - start < 0.5
        assert 5 <= sum(accepted) <= 6  # the sender thread may hold one while it waits
        dropped = registry.get_sample_value("driftloop_prediction_events_dropped_total",
                                            {"reason": "queue_full"})
        assert dropped == 50 - sum(accepted)
        assert registry.get_sample_value("driftloop_prediction_events_queued") >= 4
    finally:
        emitter.close(timeout_s=0.5)
