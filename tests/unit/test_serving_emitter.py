"""The prediction emitter never blocks an inference: a full queue drops and counts."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from driftloop import events
from driftloop.errors import Unavailable
from driftloop.serving.emitter import PredictionEmitter


def _unreachable():
    raise Unavailable("Kafka at 127.0.0.1:1 unavailable")


def test_offers_return_while_kafka_hangs_and_overflow_is_counted():
    """Behaviour, not speed: the sender is stuck connecting for good, yet every offer
    returns (how fast is a bench figure: bench/local_costs.py)."""
    registry = CollectorRegistry()
    hang = threading.Event()

    def hanging() -> None:
        hang.wait()  # Kafka that never answers
        _unreachable()

    emitter = PredictionEmitter(hanging, maxsize=5, registry=registry)
    accepted: list[bool] = []

    def offer_all() -> None:
        accepted.extend(emitter.offer(events.new_event(events.PREDICTION, "t", {"i": i}))
                        for i in range(50))

    offers = threading.Thread(target=offer_all, daemon=True)
    try:
        offers.start()
        offers.join(timeout=30)  # a deadline for a stuck run, not a speed threshold
        assert not offers.is_alive(), "offer blocked while Kafka hangs"
        assert len(accepted) == 50
        assert 5 <= sum(accepted) <= 6  # the sender thread may hold one while it waits
        dropped = registry.get_sample_value("driftloop_prediction_events_dropped_total",
                                            {"reason": "queue_full"})
        assert dropped == 50 - sum(accepted)
        assert registry.get_sample_value("driftloop_prediction_events_queued") >= 4
    finally:
        hang.set()
        emitter.close(timeout_s=0.5)
