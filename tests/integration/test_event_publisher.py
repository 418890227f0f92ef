"""The one lazy publisher drift-check, retrain-trigger and promote emit through
(``driftloop.publisher.EventPublisher``), against a broker of the test's own that stops
and restarts: no producer before the first publish, a refused publish is ``Unavailable``
(503 at the edge, never a 500), and the next publish after the outage goes through a
freshly built producer and is acknowledged."""

from __future__ import annotations

import time
from typing import Any

import pytest

from driftloop import events as ev
from driftloop import topics
from driftloop.bus import make_producer
from driftloop.errors import Unavailable
from driftloop.publisher import EventPublisher
from driftloop.settings import Settings

pytestmark = pytest.mark.integration


def promoted(version: str) -> ev.Event:
    data = ev.ModelPromotedData(
        model="digits", version=version, previous_version=None, reason="test"
    )
    return ev.new_event(ev.MODEL_PROMOTED, "test-publisher", data, model="digits")


def test_publisher_builds_on_first_use_and_rebuilds_after_an_outage(
    own_kafka: Any, tmp_path: Any
) -> None:
    settings = Settings(state_dir=tmp_path, kafka_bootstrap=own_kafka.bootstrap)
    built: list[object] = []

    def factory() -> Any:
        producer = make_producer(
            settings,
            max_block_ms=3000,
            request_timeout_ms=1500,
            delivery_timeout_ms=4000,
            bootstrap_timeout_ms=3000,
        )
        built.append(producer)
        return producer

    publisher = EventPublisher(settings, factory=factory)
    assert built == []  # nothing is built before the first publish
    first = publisher.publish(promoted("2"), key="digits")
    publisher.publish(promoted("3"), key="digits")
    assert len(built) == 1  # one producer while Kafka takes the events

    own_kafka.stop()
    with pytest.raises(Unavailable):
        publisher.publish(promoted("4"), key="digits")
    own_kafka.start()

    deadline = time.monotonic() + 120
    while True:
        try:
            after = publisher.publish(promoted("5"), key="digits")
            break
        except Unavailable:
            assert time.monotonic() < deadline, "publishing did not recover after the restart"
            time.sleep(1)
    assert len(built) >= 2 and built[-1] is not built[0]  # rebuilt after the failure
    publisher.close()

    ids = {e.id for e in own_kafka.read_events(topics.EVENTS)}
    assert {first.id, after.id} <= ids
    got = {e.id: e for e in own_kafka.read_events(topics.EVENTS)}[after.id]
    assert got.data == {
        "model": "digits",
        "version": "5",
        "previous_version": None,
        "reason": "test",
    }
