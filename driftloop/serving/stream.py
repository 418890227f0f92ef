"""Streaming inference: ``driftloop.preprocessed.<modality>`` → model → ``driftloop.predictions``.

Each record is a CloudEvent naming its target model in the ``model`` extension: a
preprocessed event (``io.driftloop.preprocessed.v1``, JSON with a ``payload`` inline in
base64 or as a blob key, see flink/README.md) or a raw input event
(``io.driftloop.input.v1``, media bytes as the value). The model is called over V2 with
the input's id as the request id, and the prediction event (same id) is published with
acks=all before the offset is committed: at least once, duplicates share their id.
Inputs the model rejects (4xx) or that run past its time limit (504 from the model) go
to the dead-letter topic with the reason; an unavailable server is retried without
losing the record.

An input the preprocess job did not store (inline base64, raw media) is offered to the
payload logger like one the model server answered over REST or gRPC, and the prediction
event carries the key it gets (``input_ref``), so feedback on it can train.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from driftloop import events, topics
from driftloop.errors import BadRequest, DriftloopError, Unavailable
from driftloop.events import PREPROCESSED
from driftloop.naming import is_safe_segment

if TYPE_CHECKING:
    from driftloop.blob import BlobStore
    from driftloop.serving.client import V2Client
    from driftloop.serving.payloads import LoggingPolicies, PayloadLogger
    from driftloop.serving.v2 import Prediction
    from driftloop.settings import Settings

log = logging.getLogger(__name__)
SOURCE = "driftloop/serving/stream"


@dataclass(frozen=True)
class StreamInput:
    """What one record asks for: a model run on media bytes, under the input's id."""

    id: str
    model: str
    media: bytes
    modality: str | None
    input_ref: str | None = None


def parse_record(event: events.Event, store: BlobStore | None) -> StreamInput:
    """A preprocessed or raw input event → the media to infer on (``BadRequest`` if unusable)."""
    model = event.extensions.get("model")
    data = event.data
    if model is None and isinstance(data, Mapping):
        model = data.get("model")
    if not is_safe_segment(model):
        raise BadRequest(f"record {event.id}: model {model!r} is missing or unsafe")
    modality = event.extensions.get("modality")
    if event.type == events.INPUT:
        if not isinstance(data, bytes | bytearray) or not data:
            raise BadRequest(f"record {event.id}: an input event must carry media bytes")
        return StreamInput(event.id, model, bytes(data), modality)
    if event.type != PREPROCESSED:
        raise BadRequest(f"record {event.id}: type {event.type!r} is not "
                         f"{PREPROCESSED} or {events.INPUT}")
    payload = data.get("payload") if isinstance(data, Mapping) else None
    if not isinstance(payload, Mapping):
        raise BadRequest(f"record {event.id}: data.payload is missing")
    modality = modality or data.get("modality")
    if payload.get("encoding") == "base64":
        try:
            media = base64.b64decode(str(payload.get("data", "")), validate=True)
        except (binascii.Error, ValueError) as e:
            raise BadRequest(f"record {event.id}: payload is not valid base64") from e
        return StreamInput(event.id, model, media, modality)
    if payload.get("encoding") == "blob":
        key = payload.get("blob_key")
        if store is None or not isinstance(key, str):
            raise BadRequest(f"record {event.id}: blob payload without a usable blob_key")
        try:
            media = store.get(key)
        except KeyError as e:
            raise BadRequest(f"record {event.id}: blob {key!r} not found") from e
        return StreamInput(event.id, model, media, modality, input_ref=key)
    raise BadRequest(f"record {event.id}: payload encoding {payload.get('encoding')!r} "
                     "is not base64 or blob")


def prediction_event(inp: StreamInput, pred: Prediction, latency_ms: float) -> events.Event:
    """The prediction event of a streamed input: the input's id, the answering version."""
    if pred.version is None:  # (a prediction event names its version; the payload refuses None)
        raise ValueError(f"the model server answered {inp.id!r} without a model version")
    data = events.PredictionData(model=inp.model, version=pred.version,
                                 output=dict(pred.output), modality=inp.modality,
                                 input_ref=inp.input_ref, latency_ms=round(latency_ms, 3))
    return events.new_event(events.PREDICTION, SOURCE, data, id=inp.id, model=inp.model)


class StreamPredictor:
    """Consumes input topics, calls the model server, publishes predictions, commits."""

    def __init__(self, settings: Settings, *, topic_names: Sequence[str] | None = None) -> None:
        self.settings = settings
        self.topics = list(topic_names or [topics.preprocessed(m) for m in topics.MODALITIES])
        self.stop_event = threading.Event()
        self.processed = 0
        self.dead_lettered = 0
        self.queue_depth = 0
        """Records behind the consumer's position, for /metrics (refreshed every few s)."""
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        """The payload logger's metrics (served with the stream's own on /metrics)."""
        self.payloads: PayloadLogger | None = None
        self._policies: LoggingPolicies | None = None

    def run(self) -> None:
        """Until ``stop_event`` is set."""
        from kafka import TopicPartition

        from driftloop import bus
        from driftloop.blob import open_store
        from driftloop.serving.client import V2Client
        from driftloop.serving.payloads import LoggingPolicies, PayloadLogger

        s = self.settings
        store = open_store(s.resolved_blob_url, s)
        if self.payloads is None:
            self.payloads = PayloadLogger(lambda: open_store(s.resolved_blob_url, s),
                                          registry=self.registry)
        self._policies = LoggingPolicies(s.policy_dir)
        consumer = bus.make_consumer(s, self.topics, s.serving_stream_group)
        producer = bus.make_producer(s)
        client = V2Client(s.resolved_serving_url, timeout_s=s.serving_timeout_s)
        from driftloop.monitoring.stream_metrics import queue_depth

        measured = 0.0
        try:
            while not self.stop_event.is_set():
                batches = consumer.poll(timeout_ms=500, max_records=50)
                if time.monotonic() - measured > 5.0:
                    measured = time.monotonic()
                    try:
                        self.queue_depth = queue_depth(consumer)
                    except Exception as e:  # a metric never stops the stream
                        log.debug("queue depth not measured: %s", e)
                pending: list[Any] = []
                for tp, records in batches.items():
                    for i, rec in enumerate(records):
                        try:
                            pending.append(self._handle(rec, store, client, producer))
                        except Unavailable as e:
                            log.warning("model server unavailable (%s); retrying", e)
                            consumer.seek(TopicPartition(tp.topic, tp.partition), records[i].offset)
                            producer.flush()
                            time.sleep(1.0)
                            break
                producer.flush(timeout=30)
                for fut in pending:
                    fut.get(timeout=30)  # raises: nothing is committed, the records come again
                if batches:
                    consumer.commit()
        finally:
            client.close()
            producer.close(timeout=5)
            consumer.close()
            self.payloads.close()

    def _handle(self, rec: Any, store: BlobStore, client: V2Client, producer: Any) -> Any:
        """Infer one record; return the future of what it published (prediction or dead letter)."""
        from driftloop import bus

        try:
            event = events.from_kafka(rec.value, rec.headers, rec.key)
            inp = parse_record(event, store)
            start = time.perf_counter()
            pred = client.infer_bytes(inp.model, inp.media, request_id=inp.id, emit=False)
            latency_ms = (time.perf_counter() - start) * 1000.0
        except Unavailable:
            raise
        except DriftloopError as e:
            self.dead_lettered += 1
            return bus.dead_letter(producer, reason=f"serving: {e.message}", source_topic=rec.topic,
                            value=rec.value, headers=rec.headers, key=rec.key,
                            partition=rec.partition, offset=rec.offset)
        self.processed += 1
        if inp.input_ref is None and self.payloads is not None and self._policies is not None:
            ref = self.payloads.offer(inp.model, inp.id, self._policies.for_model(inp.model),
                                      media=inp.media)
            if ref is not None:
                inp = replace(inp, input_ref=ref)
        return bus.send_event(producer, topics.PREDICTIONS,
                              prediction_event(inp, pred, latency_ms), key=inp.model)


def main() -> None:
    """Entry point of the local stack's streaming predictor."""
    import signal

    from driftloop.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    predictor = StreamPredictor(settings)
    if settings.serving_stream_metrics_port:
        from driftloop.monitoring.stream_metrics import serve

        serve(predictor, settings.serving_stream_metrics_port, registry=predictor.registry)
    signal.signal(signal.SIGTERM, lambda *_: predictor.stop_event.set())
    try:
        predictor.run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
