"""Raw inputs to ``driftloop.raw.<modality>`` (Kafka binary mode, acks=all).

Inputs travel inline: today's readers of the raw topics (Flink preprocess, the serving
stream) take media bytes only, so a by-reference input (a CloudEvents ``dataref``) would
be dead-lettered; an input above ``max_inline_bytes`` is refused here instead."""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING

from driftloop import bus, topics
from driftloop import events as ev
from driftloop.errors import BadRequest, FieldError, PayloadTooLarge

if TYPE_CHECKING:
    from kafka import KafkaProducer

    from driftloop.settings import Settings


class InputSender:
    def __init__(self, source: str, settings: Settings | None) -> None:
        self.source, self.settings = source, settings
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    @property
    def max_inline_bytes(self) -> int:
        """The record limit less room for headers."""
        return (self.settings.kafka_max_message_bytes if self.settings else 1_000_000) - 4096

    def event(self, model: str, data: bytes, *, content_type: str,
              id: str | None) -> tuple[str, ev.Event]:
        from driftloop.client.wire import modality_of

        modality = modality_of(content_type)
        if len(data) > self.max_inline_bytes:
            raise PayloadTooLarge(
                f"data: {len(data)} bytes, inputs travel inline up to {self.max_inline_bytes}",
                fields=[FieldError("data", "max-inline-bytes",
                                   f"at most {self.max_inline_bytes} bytes")])
        event = ev.new_event(ev.INPUT, self.source, data, id=id or str(uuid.uuid4()),
                             datacontenttype=content_type, model=model)
        return topics.raw(modality), event

    def send(self, model: str, data: bytes, *, content_type: str, id: str | None) -> str:
        if self.settings is None:
            raise BadRequest("send_input needs the client's kafka settings")
        topic, event = self.event(model, data, content_type=content_type, id=id)
        with self._lock:
            if self._producer is None:
                self._producer = bus.make_producer(self.settings)
            producer = self._producer
        bus.publish(producer, topic, [event], key=model)
        return event.id

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
