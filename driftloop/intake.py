"""Feedback intake: the logic behind ``functions/feedback-intake``.

``IntakeService`` is a ``driftloop.function_service.FunctionService``: the shared edge
answers probes, 405/404/413 and decodes the CloudEvents; this module validates feedback
and writes it. ``handle(Request) -> Response`` is the whole behaviour, testable without
a server.

Rules:
- CloudEvents in binary, structured or batch mode; type ``io.driftloop.feedback.v1``.
- Every field error of an event is reported at once (4xx, JSON body).
- 202 only after Kafka acknowledged the record (acks=all, idempotent producer).
- Kafka unavailable: 503 with ``Retry-After``; nothing is acknowledged that is not durable.
- Batches are handled per event: valid events are written, invalid ones reported with
  their index; the status is 202 (all accepted), 207 (mixed) or the common 4xx/503. Every
  event is validated and encoded before any is sent, so one bad event never fails the
  others; a batch holds at most ``intake_max_batch_events`` events (413 above).
- Ids (CloudEvent id, source, ``prediction_id``) are printable ASCII of bounded length;
  the ``model`` extension, when sent, must equal ``data.model``.
- Bodies are parsed by ``events.load_json``: nesting, number size and Unicode are bounded
  there for every surface.
- Idempotency is downstream: the record keeps the event's (source, id), and every
  consumer that materialises feedback (archive, join) keeps the first record per
  (source, id) and drops repeats, so a retried POST never counts twice.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from driftloop import events as ev
from driftloop import topics
from driftloop.auth import TokenSet, bearer_token
from driftloop.errors import (
    DriftloopError,
    FieldError,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from driftloop.function_service import FunctionService, Routes
from driftloop.http import Request, Response
from driftloop.naming import SAFE_ID_RULE, is_safe_id
from driftloop.publisher import LazyProducer

if TYPE_CHECKING:
    from kafka import KafkaProducer

    from driftloop.settings import Settings

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi" / "feedback-intake.json"
JSON_CONTENT_TYPE = re.compile(r"application/json(?:; *charset=(?:utf-8|UTF-8))?")
"""Feedback data is JSON: ``application/json``, optionally with a UTF-8 charset."""
ROUTES = Routes(
    name="feedback-intake",
    post="method not allowed",
    get=("/metrics", "/openapi.json"),
    post_path="/",
    plain_json=False,
    batch_items=True,
    failure="intake could not process this event; it was not written",
)
"""POST feedback CloudEvents to ``/``; read ``/metrics`` and ``/openapi.json``."""

log = logging.getLogger("driftloop.intake")


class IntakeMetrics:
    """Prometheus metrics of one intake process (its own registry, served at /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "driftloop_intake_events_accepted",
            "Feedback events acknowledged by Kafka.",
            ["mode"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "driftloop_intake_events_rejected",
            "Feedback events refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "driftloop_intake_request_seconds",
            "Time to answer an intake request.",
            ["mode", "status"],
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


def _mode(headers: Mapping[str, str]) -> str:
    ct = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ct == ev.BATCH:
        return "batch"
    if ct == ev.STRUCTURED:
        return "structured"
    return "binary"


class IntakeService(FunctionService):
    """Validates feedback CloudEvents and writes them durably to ``driftloop.feedback``."""

    routes = ROUTES

    def __init__(
        self,
        settings: Settings,
        producer_factory: Callable[[], KafkaProducer] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = IntakeMetrics()
        self._tokens = TokenSet(sorted(settings.intake_token_set))
        self._producer = LazyProducer(producer_factory or self._default_producer)
        self._openapi: bytes | None = None

    @property
    def max_body_bytes(self) -> int:
        return self.settings.intake_max_body_bytes

    def metrics_registry(self) -> CollectorRegistry:
        return self.metrics.registry

    # ------------------------------------------------------------------ Kafka

    def _default_producer(self) -> KafkaProducer:
        from driftloop.bus import make_producer

        timeout_ms = int(self.settings.intake_send_timeout_s * 1000)
        # Below a few ms of linger librdkafka's broker thread wakes per record: measured
        # 0.5-1.6 ms of CPU per record at 0-1 ms against 0.1 ms at 5 ms (and more records
        # per second); kafka-python does best at 1 ms.
        librdkafka = self.settings.kafka_producer_client == "confluent-kafka"
        return make_producer(
            self.settings,
            linger_ms=5 if librdkafka else 1,
            max_block_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=max(1000, timeout_ms // 2),
            delivery_timeout_ms=max(timeout_ms + 2000, 30_000),
        )

    def producer(self) -> KafkaProducer:
        try:
            return self._producer.get()
        except Exception as e:
            raise self._unavailable(e) from e

    def _unavailable(self, e: Exception) -> Unavailable:
        return Unavailable(
            f"Kafka cannot take feedback now: {type(e).__name__}",
            retry_after_s=self.settings.intake_retry_after_s,
        )

    def close(self) -> None:
        self._producer.close()

    # ------------------------------------------------------------------ the edge's hooks

    def get(self, request: Request) -> Response:
        if request.path == "/metrics":
            return Response(
                200, generate_latest(self.metrics.registry), {"content-type": CONTENT_TYPE_LATEST}
            )
        return Response(200, self.openapi(), {"content-type": "application/json"})

    def openapi(self) -> bytes:
        if self._openapi is None:
            self._openapi = OPENAPI_PATH.read_bytes()
        return self._openapi

    def authorize(self, request: Request) -> None:
        if not self._tokens:
            return
        token = bearer_token(request.headers)
        if token is None or not self._tokens.matches(token):
            raise Unauthorized("a valid bearer token is required (Authorization: Bearer ...)")

    def refused(self, error: DriftloopError) -> None:
        self.metrics.rejected.labels(error.reason).inc()

    def answered(self, request: Request, response: Response, seconds: float) -> None:
        mode = _mode(request.headers)
        if mode != "batch" and response.status == 202:
            self.metrics.accepted.labels(mode).inc()  # a batch counts its own events
        self.metrics.latency.labels(mode, str(response.status)).observe(seconds)

    def on_events(self, events: list[ev.Event]) -> Response:
        """One event (binary or structured mode): 202 once Kafka acknowledged it."""
        (event,) = events
        event = self._validate(event)
        refused = self._send([_record(event)])[0]
        if refused is not None:
            raise refused
        return Response.json(202, {"id": event.id, "source": event.source, "status": "accepted"})

    def _validate(self, event: ev.Event) -> ev.Event:
        errors: list[FieldError] = [
            FieldError(name, "safe-id", f"{name} {SAFE_ID_RULE}")
            for name, value in (("id", event.id), ("source", event.source))
            if not is_safe_id(value)
        ]
        if event.type != ev.FEEDBACK:
            errors.append(
                FieldError(
                    "type",
                    "equals " + ev.FEEDBACK,
                    f"type must be {ev.FEEDBACK}, got {event.type!r:.80}",
                )
            )
        if event.datacontenttype is not None and not JSON_CONTENT_TYPE.fullmatch(
            event.datacontenttype
        ):
            errors.append(
                FieldError("datacontenttype", "json", "feedback data must be application/json")
            )
        elif isinstance(event.data, bytes | bytearray):
            errors.append(FieldError("data", "json", "feedback data must be a JSON object"))
        else:
            try:
                ev.FeedbackData.parse(event.data)
            except ValidationFailed as e:
                errors.extend(e.fields)
            errors.extend(_model_extension_errors(event))
        if errors:
            raise ValidationFailed(errors)
        return event

    def _send(self, records: list[ev.KafkaRecord]) -> list[DriftloopError | None]:
        """Write records and wait until Kafka acknowledged every one (acks=all). Per
        record: None once durable, or the error that refuses that record alone (larger
        than the producer's ``max_request_size``). Kafka unreachable: ``Unavailable``.
        (Errors are classified by ``bus.is_*``, which load ``kafka.errors`` only after an
        error: the first event does not pay for kafka-python's import.)"""
        from driftloop.bus import is_kafka_error, is_record_too_large

        producer = self.producer()
        timeout = self.settings.intake_send_timeout_s
        outcomes: list[DriftloopError | None] = [None] * len(records)
        try:
            futures = []
            for i, r in enumerate(records):
                try:
                    futures.append(
                        (
                            i,
                            producer.send(
                                topics.FEEDBACK, key=r.key, value=r.value, headers=r.headers
                            ),
                        )
                    )
                except Exception as e:
                    if not is_record_too_large(e):
                        raise
                    outcomes[i] = _record_too_large(e)
            deadline = time.monotonic() + timeout
            for i, f in futures:
                try:
                    f.get(timeout=max(0.1, deadline - time.monotonic()))
                except Exception as e:
                    if not is_record_too_large(e):
                        raise
                    outcomes[i] = _record_too_large(e)
        except Exception as e:
            if not (isinstance(e, OSError) or is_kafka_error(e)):
                raise
            self._producer.discard(producer)
            raise self._unavailable(e) from e
        return outcomes

    def on_batch(self, items: list[Any]) -> Response:
        """Every event of a batch validated and answered on its own (202, 207 or the
        common status)."""
        limit = self.settings.intake_max_batch_events
        if len(items) > limit:
            raise PayloadTooLarge(
                f"body: a batch holds at most {limit} events, got {len(items)}",
                fields=[FieldError("body", "max-items", f"at most {limit} events per batch")],
            )
        results: list[dict[str, Any]] = [{} for _ in items]
        valid: list[tuple[int, ev.Event, ev.KafkaRecord]] = []
        for i, item in enumerate(items):
            try:
                event = self._validate(ev.from_structured(item))
                valid.append((i, event, _record(event)))
            except DriftloopError as e:
                results[i] = self._rejected(i, item, e)
            except Exception:  # one event's defect stays that event's answer
                log.exception("intake could not handle batch event %d", i)
                results[i] = self._rejected(i, item, _internal())
        accepted = 0
        if valid:
            try:
                outcomes = self._send([r for _, _, r in valid])
            except Unavailable as e:
                self.metrics.rejected.labels(e.reason).inc(len(valid))
                for i, event, _ in valid:
                    results[i] = {"index": i, "id": event.id, "status": 503, **e.to_dict()}
            else:
                for (i, event, _), refused in zip(valid, outcomes, strict=True):
                    if refused is None:
                        accepted += 1
                        results[i] = {"index": i, "id": event.id, "status": 202}
                    else:
                        results[i] = self._rejected(i, event.id, refused)
                self.metrics.accepted.labels("batch").inc(accepted)
        statuses = {r["status"] for r in results}
        if statuses == {202}:
            status = 202
        elif 202 in statuses:
            status = 207
        elif 503 in statuses:
            status = 503
        elif all(400 <= s < 500 for s in statuses):
            status = 400
        else:
            status = 500
        body_obj = {"accepted": accepted, "rejected": len(items) - accepted, "results": results}
        headers = (
            {"retry-after": str(self.settings.intake_retry_after_s)} if 503 in statuses else None
        )
        return Response.json(status, body_obj, headers)

    def _rejected(self, index: int, item: Any, e: DriftloopError) -> dict[str, Any]:
        """One refused batch event, compactly: its index, its id when that is a safe id,
        the status and the broken rules (the summary message only when no field names)."""
        self.metrics.rejected.labels(e.reason).inc()
        ident = item.get("id") if isinstance(item, Mapping) else item
        detail = e.to_dict()
        if "fields" in detail:
            del detail["message"]
        return {
            "index": index,
            "id": ident if is_safe_id(ident) else None,
            "status": e.status,
            **detail,
        }


def _record(event: ev.Event) -> ev.KafkaRecord:
    """The Kafka record of a validated event, built before anything is sent so that an
    event that cannot be encoded fails alone."""
    try:
        return ev.to_kafka(event, key=event.data["model"])
    except (ValueError, TypeError) as e:  # e.g. text that is not Unicode
        raise ValidationFailed(
            [FieldError("event", "encodable", f"cannot be written as a Kafka record: {e}"[:200])]
        ) from e


def _model_extension_errors(event: ev.Event) -> list[FieldError]:
    """The data's model is the one rule downstream; an extension that says otherwise would
    split the archives, so it is refused."""
    ext = event.extensions.get("model")
    data_model = event.data.get("model") if isinstance(event.data, Mapping) else None
    if ext is None or not isinstance(data_model, str) or ext == data_model:
        return []
    return [
        FieldError(
            "model",
            "equals data.model",
            f"the model extension {ext!r:.70} contradicts data.model {data_model!r:.70}",
        )
    ]


def _record_too_large(e: Exception) -> PayloadTooLarge:
    return PayloadTooLarge(
        "event: larger than the largest Kafka record",
        fields=[FieldError("event", "max-record-size", f"{e}"[:200])],
    )


def _internal() -> DriftloopError:
    return DriftloopError("intake could not process this event; it was not written")
