"""Raw inputs to ``driftloop.raw.<modality>`` (Kafka binary mode, acks=all).

Small inputs travel inline (the media bytes are the record value). An input above
``raw_input_dataref_bytes`` travels by reference (claim check): its bytes are written to the
blob store first, under a content-addressed key, then the event carries only the CloudEvents
``dataref`` extension (``<blob url>/<key>``), so a few dozen bytes cross Kafka and Flink's
JVM instead of the media; Flink preprocess reads the bytes from the store. A failed event
after a written blob leaves an unreferenced object, never an event without its bytes."""

from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from driftloop import bus, topics
from driftloop import events as ev
from driftloop.blob import partition_key
from driftloop.errors import BadRequest, FieldError, PayloadTooLarge

if TYPE_CHECKING:
    from kafka import KafkaProducer

    from driftloop.blob import BlobStore
    from driftloop.settings import Settings

RAW_KIND = "raw"
"""Blob keys of by-reference inputs: ``raw/model=<m>/date=<YYYY-MM-DD>/<modality>/<sha256>``."""


class InputSender:
    def __init__(self, source: str, settings: Settings | None) -> None:
        self.source, self.settings = source, settings
        self._producer: KafkaProducer | None = None
        self._store: BlobStore | None = None
        self._lock = threading.Lock()

    @property
    def max_inline_bytes(self) -> int:
        """The record limit less room for headers."""
        return (self.settings.kafka_max_message_bytes if self.settings else 1_000_000) - 4096

    @property
    def dataref_above(self) -> int | None:
        """Inputs above this many bytes travel by reference; None: all inline."""
        if self.settings is None or not self.settings.raw_input_dataref_bytes:
            return None
        return min(self.settings.raw_input_dataref_bytes, self.max_inline_bytes)

    @property
    def max_input_bytes(self) -> int:
        """The largest input preprocess accepts (by reference); inline: the record limit."""
        if self.dataref_above is None or self.settings is None:
            return self.max_inline_bytes
        return self.settings.flink_max_input_bytes

    def event(self, model: str, data: bytes, *, content_type: str,
              id: str | None) -> tuple[str, ev.Event]:
        """The topic and the event of one input (its bytes written to the blob store
        first when it travels by reference)."""
        from driftloop.client.wire import modality_of

        modality = modality_of(content_type)
        if len(data) > self.max_input_bytes:
            how = "by reference" if self.dataref_above is not None else "inline"
            raise PayloadTooLarge(
                f"data: {len(data)} bytes, inputs travel {how} up to {self.max_input_bytes}",
                fields=[FieldError("data", "max-input-bytes",
                                   f"at most {self.max_input_bytes} bytes")])
        eid = id or str(uuid.uuid4())
        above = self.dataref_above
        if above is None or len(data) <= above:
            return topics.raw(modality), ev.new_event(
                ev.INPUT, self.source, data, id=eid, datacontenttype=content_type, model=model)
        now = datetime.now(UTC)
        key = partition_key(RAW_KIND, model, now.date(),
                            f"{modality}/{hashlib.sha256(data).hexdigest()}")
        store = self.store()
        store.put(key, data)  # the bytes first: an event never names a missing blob
        ref = f"{store.url.rstrip('/')}/{key}"
        return topics.raw(modality), ev.new_event(
            ev.INPUT, self.source, None, id=eid, datacontenttype=content_type, model=model,
            time=now, **{ev.DATAREF: ref})

    def store(self) -> BlobStore:
        from driftloop.blob import open_store

        if self.settings is None:
            raise BadRequest("a by-reference input needs the client's settings")
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings.resolved_blob_url, self.settings)
            return self._store

    def send(self, model: str, data: bytes, *, content_type: str, id: str | None) -> str:
        if self.settings is None:
            raise BadRequest("send_input needs the client's kafka settings")
        topic, event = self.event(model, data, content_type=content_type, id=id)
        with self._lock:
            if self._producer is None:
                self._producer = bus.make_producer(self.settings)
            producer = self._producer
        bus.publish(producer, topic, [event], key=bus.input_key(event))
        return event.id

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None
