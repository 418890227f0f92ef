"""The time-windowed Kafka read the guard, the shadow comparison and drift checks rest on.

A window starts where its caller says (``since_ms``) or at ``now - window_s`` taken at the
call: never after the reader connected, which on a loaded machine takes long enough to
move the start past records written just after it (a canary's first labeled records).
"""

from __future__ import annotations

import time
import uuid

import pytest

from driftloop import events as ev
from driftloop import topics
from driftloop.bus import make_producer, publish
from driftloop.monitoring.window import read_topic
from driftloop.settings import Settings
from tests.fixtures.kafka import KafkaFixture

pytestmark = pytest.mark.integration


def _records(model: str, n: int) -> list[ev.Event]:
    return [
        ev.new_event(ev.PREDICTION, f"test/{model}",
                     {"model": model, "version": "1", "output": {"label": i % 10}},
                     datacontenttype=ev.JSON)
        for i in range(n)
    ]


def _published(settings: Settings, events: list[ev.Event]) -> list[ev.Event]:
    producer = make_producer(settings)
    try:
        publish(producer, topics.PREDICTIONS, events)
    finally:
        producer.close(timeout=5)
    return events


@pytest.mark.parametrize("client", ["confluent-kafka", "kafka-python"])
def test_records_written_right_after_the_start_are_in_every_read(
    kafka: KafkaFixture, client: str
) -> None:
    settings = Settings(kafka_bootstrap=kafka.bootstrap, kafka_producer_client=client)
    model = f"window-{uuid.uuid4().hex[:8]}"
    since_ms = int(time.time() * 1000)
    sent = _published(settings, _records(model, 20))
    ids = {e.id for e in sent}
    for _ in range(5):  # each read connects afresh, later and later after the start
        w = read_topic(settings, topics.PREDICTIONS, since_ms=since_ms, max_records=1000,
                       model=model)
        assert {r.event.id for r in w.records} == ids
        time.sleep(0.2)


def test_a_window_fixes_its_start_before_connecting(kafka: KafkaFixture) -> None:
    """``window_s`` becomes a start at the call: a window exactly as old as the records
    holds them all, however long the reader then takes to connect."""
    settings = Settings(kafka_bootstrap=kafka.bootstrap)
    model = f"window-{uuid.uuid4().hex[:8]}"
    sent = _published(settings, _records(model, 5))
    ids = {e.id for e in sent}
    first_ms = min(r.timestamp for r in kafka.read_records(topics.PREDICTIONS)
                   if dict(r.headers or ()).get("ce_id", b"").decode() in ids)
    window_s = (time.time() * 1000 - first_ms) / 1000 + 0.005  # 5 ms older than the first
    w = read_topic(settings, topics.PREDICTIONS, window_s=window_s, max_records=1000,
                   model=model)
    assert {r.event.id for r in w.records} == ids


def test_a_window_takes_exactly_one_start(kafka: KafkaFixture) -> None:
    settings = Settings(kafka_bootstrap=kafka.bootstrap)
    with pytest.raises(ValueError, match="exactly one of window_s and since_ms"):
        read_topic(settings, topics.PREDICTIONS, max_records=10)
    with pytest.raises(ValueError, match="exactly one"):
        read_topic(settings, topics.PREDICTIONS, window_s=1, since_ms=0, max_records=10)
