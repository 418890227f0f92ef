"""feedback-intake's replay window on a real broker: a retried CloudEvent (same source and
id) is answered 202 and ``driftloop.feedback`` holds it once, whichever intake process
wrote it first, or when a killed intake left it there."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from driftloop import bus, topics
from driftloop import events as ev
from driftloop.http import Request
from driftloop.intake import IntakeService
from driftloop.intake_window import event_key
from driftloop.local.process import free_port
from driftloop.settings import Settings
from tests.fixtures.intake import feedback, intake_client, post_binary, unique_source

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(kafka: Any, tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=kafka.bootstrap,
        state_dir=tmp_path,
        intake_send_timeout_s=5,
        intake_retry_after_s=1,
    )


@pytest.fixture
def services() -> Iterator[list[IntakeService]]:
    """IntakeServices the test builds (closed at the end): stand-ins for intake replicas."""
    built: list[IntakeService] = []
    yield built
    for s in built:
        s.close()


def started(settings: Settings, built: list[IntakeService], **kw: Any) -> IntakeService:
    service = IntakeService(settings, **kw)
    service.open()
    built.append(service)
    return service


def copies(kafka: Any, source: str) -> dict[str, int]:
    """How many records of each id of ``source`` the feedback topic holds (read_committed)."""
    out: dict[str, int] = {}
    for e in kafka.read_events(topics.FEEDBACK):
        if e.source == source:
            out[e.id] = out.get(e.id, 0) + 1
    return out


def post(service: IntakeService, event: ev.Event) -> tuple[int, dict[str, Any]]:
    headers, body = ev.to_http_binary(event)
    r = service.handle(Request.post(headers, body))
    return r.status, json.loads(r.body)


def write_directly(settings: Settings, event: ev.Event) -> None:
    """The record a killed intake leaves: acknowledged by Kafka, its 202 never sent."""
    producer = bus.make_producer(settings)
    try:
        bus.publish(producer, topics.FEEDBACK, [event], key=event.data["model"])
    finally:
        producer.close()


def test_a_record_left_by_a_killed_intake_is_not_written_again(kafka, settings):
    src = unique_source()
    e = feedback(src, 1)
    write_directly(settings, e)
    client, service = intake_client(settings)  # a restarted intake: catches up first
    try:
        r = post_binary(client, "/", e)
        assert r.status_code == 202, r.text
        assert r.json() == {"id": e.id, "source": src, "status": "accepted", "duplicate": True}
        other = ev.new_event(ev.FEEDBACK, unique_source(), e.data, id=e.id)  # same id
        assert post_binary(client, "/", other).json()["status"] == "accepted"
        metrics = client.get("/metrics").text
    finally:
        service.close()
    assert copies(kafka, src) == {e.id: 1}
    assert copies(kafka, other.source) == {e.id: 1}  # another source: another event
    assert "driftloop_intake_events_duplicate_total 1.0" in metrics


def test_a_retry_through_another_replica_is_recognised(kafka, settings, services):
    src = unique_source()
    a = started(settings, services)
    b = started(settings, services)  # running before the first write: reads it as it tails
    e = feedback(src, 1)
    assert post(a, e) == (202, {"id": e.id, "source": src, "status": "accepted"})
    assert b.window is not None
    deadline = time.monotonic() + 60
    while not b.window.seen(event_key(src, e.id)):
        assert time.monotonic() < deadline, "the other replica never read the first write"
        time.sleep(0.2)
    assert post(b, e)[1].get("duplicate") is True
    c = started(settings, services)  # started after the write: its catch-up holds it
    assert post(c, e)[1].get("duplicate") is True
    assert copies(kafka, src) == {e.id: 1}


def test_concurrent_requests_for_one_event_write_it_once(kafka, settings, services):
    src = unique_source()
    service = started(settings, services)
    e = feedback(src, 7)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(service, e), range(8)))
    assert [status for status, _ in answers] == [202] * 8
    assert sum(1 for _, body in answers if not body.get("duplicate")) == 1
    assert copies(kafka, src) == {e.id: 1}


def test_a_batch_is_judged_per_event(kafka, settings, services):
    src = unique_source()
    old, new = feedback(src, 1), feedback(src, 2)
    write_directly(settings, old)
    service = started(settings, services)
    body = json.dumps([ev.to_structured(x) for x in (old, new, new)]).encode()
    r = service.handle(Request.post({"content-type": ev.BATCH}, body))
    assert r.status == 202
    doc = json.loads(r.body)
    assert doc["accepted"] == 3
    assert [x.get("duplicate", False) for x in doc["results"]] == [True, False, True]
    assert copies(kafka, src) == {old.id: 1, new.id: 1}


def test_not_caught_up_is_503_and_nothing_is_written(kafka, settings, services):
    """Fail closed: a window that cannot be read refuses writes rather than risk a
    second copy."""
    from kafka import KafkaConsumer

    nowhere = f"127.0.0.1:{free_port()}"
    service = started(
        settings,
        services,
        consumer_factory=lambda: KafkaConsumer(
            bootstrap_servers=nowhere, api_version_auto_timeout_ms=500
        ),
    )
    src = unique_source()
    status, body = post(service, feedback(src, 1))
    assert status == 503, body
    headers, payload = ev.to_http_binary(feedback(src, 1))
    assert service.handle(Request.post(headers, payload)).headers.get("retry-after") == "1"
    assert copies(kafka, src) == {}


def test_a_window_of_zero_writes_every_retry(kafka, tmp_path, services):
    settings = Settings(
        kafka_bootstrap=kafka.bootstrap,
        state_dir=tmp_path,
        intake_send_timeout_s=5,
        intake_dedup_window_s=0,
    )
    service = started(settings, services)
    src = unique_source()
    e = feedback(src, 1)
    assert post(service, e)[0] == 202
    assert post(service, e)[0] == 202
    assert copies(kafka, src) == {e.id: 2}


class AckLostOnce:
    """A real producer whose first record lands in Kafka but whose acknowledgement is lost
    (what a leader broker killed mid-request leaves: librdkafka's "possibly persisted")."""

    lost: list[bool] = []

    def __init__(self, settings: Settings) -> None:
        self.real = bus.make_producer(settings)

    def send(self, topic: str, **kw: Any) -> Any:
        future = self.real.send(topic, **kw)
        if not AckLostOnce.lost:
            future.get(timeout=30)  # durable...
            AckLostOnce.lost.append(True)
            from kafka.errors import KafkaTimeoutError

            raise KafkaTimeoutError("acknowledgement lost")  # ...but the request never hears
        return future

    def close(self, timeout: float | None = None) -> None:
        self.real.close(timeout=timeout)


def test_a_retry_after_a_lost_acknowledgement_is_not_written_again(kafka, settings, services):
    """The first write landed, its 503 went out: the retry is written only once the tail
    read the topic to its end (202 duplicate then); while it cannot, 503 again."""
    from kafka import KafkaConsumer

    held, parked = threading.Event(), threading.Event()

    class HeldConsumer(KafkaConsumer):  # the tail, lagging at will
        def poll(self, *a: Any, **kw: Any) -> Any:
            while held.is_set():
                parked.set()
                time.sleep(0.02)
            parked.clear()
            return super().poll(*a, **kw)

    AckLostOnce.lost = []
    service = started(
        settings,
        services,
        producer_factory=lambda: AckLostOnce(settings),
        consumer_factory=lambda: HeldConsumer(
            **bus.client_config(settings, "test-held-tail"),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        ),
    )
    assert service._tail is not None and service._tail.wait_ready(60)
    held.set()
    assert parked.wait(10)
    src = unique_source()
    e = feedback(src, 1)
    status, body = post(service, e)
    assert status == 503, body  # Kafka holds it: the answer could not know
    assert copies(kafka, src) == {e.id: 1}
    status, body = post(service, e)  # the tail cannot settle it: not risked
    assert status == 503, body
    threading.Timer(1.0, held.clear).start()
    assert post(service, e) == (
        202,
        {"id": e.id, "source": src, "status": "accepted", "duplicate": True},
    )
    assert copies(kafka, src) == {e.id: 1}
    other = feedback(src, 2)  # nothing unsettled: written at once
    assert post(service, other)[0] == 202
    assert copies(kafka, src) == {e.id: 1, other.id: 1}
