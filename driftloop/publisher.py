"""The Kafka producer a function service publishes through: built on first use (so a
service starts, and answers probes, without Kafka), dropped after a failure and rebuilt
by the next use (an idempotent producer can stay wedged after its broker restarted),
and every record acknowledged by all in-sync replicas (``driftloop.bus.make_producer``:
acks=all, idempotent, retried).

``LazyProducer`` is the holder (feedback-intake sends its own records through it);
``EventPublisher`` publishes one CloudEvent at a time (drift-check, retrain-trigger and
promote emit their decisions through it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from driftloop import topics
from driftloop.errors import Unavailable

if TYPE_CHECKING:
    from kafka import KafkaProducer

    from driftloop.events import Event
    from driftloop.settings import Settings

CLOSE_TIMEOUT_S = 5


class LazyProducer:
    """One producer per process, built by ``factory`` on first ``get``."""

    def __init__(self, factory: Callable[[], KafkaProducer]) -> None:
        self._factory = factory
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def get(self) -> KafkaProducer:
        """The producer, built now if there is none (raises what the factory raises)."""
        with self._lock:
            if self._producer is None:
                self._producer = self._factory()
            return self._producer

    def discard(self, producer: KafkaProducer) -> None:
        """Drop ``producer`` after it failed, so the next ``get`` builds a clean one; it
        is closed in the background without waiting (what it held was not acknowledged,
        and the caller reports that)."""
        with self._lock:
            mine = self._producer is producer
            if mine:
                self._producer = None
        if not mine:
            return  # another caller already replaced it
        threading.Thread(target=producer.close, kwargs={"timeout": 0}, daemon=True).start()

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=CLOSE_TIMEOUT_S)


class EventPublisher:
    """Publishes CloudEvents to one topic (``driftloop.events`` by default), keyed by model
    so each model's events stay in order; returns once Kafka acknowledged the event."""

    def __init__(
        self,
        settings: Settings,
        *,
        topic: str = topics.EVENTS,
        factory: Callable[[], KafkaProducer] | None = None,
    ) -> None:
        self.topic = topic
        self.settings = settings
        self._producer = LazyProducer(factory or self._default_factory)

    def _default_factory(self) -> KafkaProducer:
        from driftloop.bus import make_producer

        return make_producer(self.settings)

    def publish(self, event: Event, *, key: str) -> Event:
        """Send ``event`` and wait for its acknowledgement (``Unavailable`` when Kafka does
        not take it; the producer is then rebuilt by the next publish)."""
        from driftloop.bus import is_kafka_error, publish

        try:
            producer = self._producer.get()
        except Exception as e:
            if not is_kafka_error(e):
                raise
            raise Unavailable(f"Kafka cannot take {self.topic} events now: {e}") from e
        try:
            publish(producer, self.topic, [event], key=key)
        except Unavailable:
            self._producer.discard(producer)
            raise
        except Exception as e:
            if not (isinstance(e, OSError) or is_kafka_error(e)):
                raise
            self._producer.discard(producer)
            raise Unavailable(f"Kafka cannot take {self.topic} events now: {e}") from e
        return event

    def close(self) -> None:
        self._producer.close()


__all__ = ["EventPublisher", "LazyProducer"]
