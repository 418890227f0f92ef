"""Both producer clients behind ``driftloop.bus.make_producer`` (librdkafka and
kafka-python) on the session's real broker: one interface, the same guarantees.

Each test runs with either client: an acknowledged record is in the topic with its key,
value and headers; ``publish`` waits for every acknowledgement; a record over the size
limit is refused on its own as ``MessageSizeTooLargeError`` (intake's 413); a cluster
that cannot be reached is ``Unavailable`` when the producer is built; futures call back.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from kafka.errors import KafkaError, MessageSizeTooLargeError

from driftloop import bus, topics
from driftloop import events as ev
from driftloop.errors import Unavailable
from driftloop.local.process import free_port
from driftloop.settings import Settings

pytestmark = pytest.mark.integration

CLIENTS = ("confluent-kafka", "kafka-python")


@pytest.fixture(params=CLIENTS)
def client_settings(request: pytest.FixtureRequest, kafka: Any, tmp_path: Any) -> Settings:
    return Settings(
        state_dir=tmp_path, kafka_bootstrap=kafka.bootstrap, kafka_producer_client=request.param
    )


def feedback(src: str, i: int) -> ev.Event:
    return ev.new_event(
        ev.FEEDBACK,
        src,
        {"prediction_id": f"p{i}", "model": "digits", "truth": i % 10},
        id=f"{src}-{i}",
        datacontenttype=ev.JSON,
    )


def test_acknowledged_records_are_in_the_topic_as_sent(client_settings: Settings, kafka: Any):
    src = f"clients-{uuid.uuid4().hex[:8]}"
    producer = bus.make_producer(client_settings)
    try:
        records = [ev.to_kafka(feedback(src, i), key="digits") for i in range(20)]
        futures = [
            producer.send(topics.FEEDBACK, key=r.key, value=r.value, headers=r.headers)
            for r in records
        ]
        metadata = [f.get(timeout=30) for f in futures]
        assert {m.topic for m in metadata} == {topics.FEEDBACK}
        assert all(m.offset >= 0 for m in metadata)
        assert bus.publish(producer, topics.FEEDBACK, [feedback(src, 20)]) == 1
    finally:
        producer.close(timeout=5)
    mine = [
        r
        for r in kafka.read_records(topics.FEEDBACK)
        if dict(r.headers).get("ce_source") == src.encode()
    ]
    assert sorted(dict(r.headers)["ce_id"].decode() for r in mine) == sorted(
        f"{src}-{i}" for i in range(21)
    )
    sent = {r.value for r in records}
    assert all(r.key == b"digits" for r in mine)
    assert sent <= {r.value for r in mine}
    by_id = {dict(r.headers)["ce_id"].decode(): r for r in mine}
    assert ev.from_kafka(by_id[f"{src}-3"].value, by_id[f"{src}-3"].headers).data["truth"] == 3


def test_a_record_over_the_limit_fails_alone(client_settings: Settings):
    producer = bus.make_producer(client_settings, max_request_size=64 * 1024)
    try:
        with pytest.raises(MessageSizeTooLargeError):
            producer.send(topics.FEEDBACK, key=b"digits", value=b"x" * (128 * 1024)).get(30)
        ok = producer.send(topics.FEEDBACK, key=b"digits", value=b"small").get(30)
        assert ok.offset >= 0
    finally:
        producer.close(timeout=5)


def test_callbacks_and_errbacks_fire(client_settings: Settings):
    producer = bus.make_producer(client_settings, max_request_size=64 * 1024)
    done = threading.Event()
    seen: list[Any] = []
    try:
        fut = producer.send(topics.FEEDBACK, key=b"digits", value=b"callback")
        fut.add_callback(lambda md: (seen.append(md.topic), done.set()))
        assert done.wait(30)
        assert seen == [topics.FEEDBACK]
    finally:
        producer.close(timeout=5)


def test_an_unreachable_cluster_is_unavailable(tmp_path: Any):
    for client in CLIENTS:
        settings = Settings(
            state_dir=tmp_path,
            kafka_bootstrap=f"127.0.0.1:{free_port()}",
            kafka_producer_client=client,
        )
        with pytest.raises((Unavailable, KafkaError)):
            p = bus.make_producer(settings, bootstrap_timeout_ms=1500, max_block_ms=1500)
            try:
                bus.publish(p, topics.FEEDBACK, [feedback("down", 0)], timeout_s=2)
            finally:
                p.close(timeout=0)


def test_an_option_with_no_librdkafka_equivalent_is_refused():
    from driftloop.rdkafka import rdkafka_config

    props, own = rdkafka_config({"linger_ms": 2, "max_block_ms": 10, "acks": "all"})
    assert props == {"socket.nagle.disable": True, "linger.ms": 2, "acks": "all"}
    assert own == {"max_block_ms": 10}
    with pytest.raises(ValueError, match="key_serializer"):
        rdkafka_config({"key_serializer": str})


def test_a_failing_callback_does_not_stop_later_acknowledgements(kafka: Any, tmp_path: Any):
    settings = Settings(
        state_dir=tmp_path, kafka_bootstrap=kafka.bootstrap, kafka_producer_client="confluent-kafka"
    )
    producer = bus.make_producer(settings)
    try:

        def boom(_md: Any) -> None:
            raise RuntimeError("a caller's bug")

        producer.send(topics.FEEDBACK, key=b"digits", value=b"first").add_callback(boom)
        later = [producer.send(topics.FEEDBACK, key=b"digits", value=b"later") for _ in range(3)]
        assert all(f.get(timeout=30).offset >= 0 for f in later)
    finally:
        producer.close(timeout=5)
