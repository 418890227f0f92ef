"""Feedback intake: the logic behind ``functions/feedback-intake``.

``IntakeService.handle`` takes a method, path, headers and body and returns a
``Response``; the function module only adapts its framework's request to that, so the
whole behaviour is testable without a server.

Rules:
- CloudEvents in binary, structured or batch mode; type ``io.driftloop.feedback.v1``.
- Every field error of an event is reported at once (4xx, JSON body).
- 202 only after Kafka acknowledged the record (acks=all, idempotent producer).
- Kafka unavailable: 503 with ``Retry-After``; nothing is acknowledged that is not durable.
- Batches are handled per event: valid events are written, invalid ones reported with
  their index; the status is 202 (all accepted), 207 (mixed) or the common 4xx/503.
- Idempotency is downstream: the record keeps the event's (source, id), and every
  consumer that materialises feedback (archive, join) keeps the first record per
  (source, id) and drops repeats, so a retried POST never counts twice.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from driftloop import events as ev
from driftloop import topics
from driftloop.errors import (
    DriftloopError,
    FieldError,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from driftloop.http import Response, error_response

if TYPE_CHECKING:
    from kafka import KafkaProducer

    from driftloop.settings import Settings

OPENAPI_PATH = Path(__file__).resolve().parent / "openapi" / "feedback-intake.json"


class IntakeMetrics:
    """Prometheus metrics of one intake process (its own registry, served at /metrics)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "driftloop_intake_events_accepted", "Feedback events acknowledged by Kafka.",
            ["mode"], registry=self.registry,
        )
        self.rejected = Counter(
            "driftloop_intake_events_rejected", "Feedback events refused, by reason.",
            ["reason"], registry=self.registry,
        )
        self.latency = Histogram(
            "driftloop_intake_request_seconds", "Time to answer an intake request.",
            ["mode", "status"], registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )


def _mode(headers: Mapping[str, str]) -> str:
    ct = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ct == ev.BATCH:
        return "batch"
    if ct == ev.STRUCTURED:
        return "structured"
    return "binary"


class IntakeService:
    """Validates feedback CloudEvents and writes them durably to ``driftloop.feedback``."""

    def __init__(
        self,
        settings: Settings,
        producer_factory: Callable[[], KafkaProducer] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = IntakeMetrics()
        self._tokens = settings.intake_token_set
        self._producer_factory = producer_factory or self._default_producer
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._openapi: bytes | None = None

    @property
    def max_body_bytes(self) -> int:
        return self.settings.intake_max_body_bytes

    # ------------------------------------------------------------------ Kafka

    def _default_producer(self) -> KafkaProducer:
        from driftloop.bus import make_producer

        timeout_ms = int(self.settings.intake_send_timeout_s * 1000)
        return make_producer(
            self.settings,
            linger_ms=1,
            max_block_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            request_timeout_ms=max(1000, timeout_ms // 2),
            delivery_timeout_ms=max(timeout_ms + 2000, 30_000),
        )

    def producer(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                try:
                    self._producer = self._producer_factory()
                except Exception as e:
                    raise self._unavailable(e) from e
            return self._producer

    def _unavailable(self, e: Exception) -> Unavailable:
        return Unavailable(f"Kafka cannot take feedback now: {type(e).__name__}",
                           retry_after_s=self.settings.intake_retry_after_s)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=5)
                self._producer = None

    # ------------------------------------------------------------------ routing

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Response:
        """Answer one HTTP request (headers are matched case-insensitively)."""
        h = {k.lower(): v for k, v in headers.items()}
        if path in ("/healthz", "/readyz", "/health/liveness", "/health/readiness"):
            return Response.json(200, {"status": "ok"}) if method == "GET" else _not_allowed()
        if path == "/metrics" and method == "GET":
            return Response(200, generate_latest(self.metrics.registry),
                            {"content-type": CONTENT_TYPE_LATEST})
        if path == "/openapi.json" and method == "GET":
            return Response(200, self.openapi(), {"content-type": "application/json"})
        if path not in ("/", ""):
            return Response.json(404, {"error": "not_found", "message": f"no route {path}"})
        if method != "POST":
            return _not_allowed()
        mode = _mode(h)
        started = time.perf_counter()
        response = self._post(mode, h, body)
        self.metrics.latency.labels(mode, str(response.status)).observe(
            time.perf_counter() - started
        )
        return response

    def openapi(self) -> bytes:
        if self._openapi is None:
            self._openapi = OPENAPI_PATH.read_bytes()
        return self._openapi

    # ------------------------------------------------------------------ POST

    def _post(self, mode: str, h: Mapping[str, str], body: bytes) -> Response:
        try:
            self._authorize(h)
            self._check_size(h, body)
            if mode == "batch":
                return self._post_batch(body)
            event = self._validate(ev.from_http(h, body)[0])
            self._send([event])
        except DriftloopError as e:
            self.metrics.rejected.labels(e.reason).inc()
            return error_response(e)
        self.metrics.accepted.labels(mode).inc()
        return Response.json(202, {"id": event.id, "source": event.source, "status": "accepted"})

    def _authorize(self, h: Mapping[str, str]) -> None:
        if not self._tokens:
            return
        scheme, _, token = h.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(token.strip().encode(), t.encode()) for t in self._tokens
        ):
            raise Unauthorized("a valid bearer token is required (Authorization: Bearer ...)")

    def _check_size(self, h: Mapping[str, str], body: bytes) -> None:
        limit = self.settings.intake_max_body_bytes
        declared = h.get("content-length", "")
        if (declared.isdigit() and int(declared) > limit) or len(body) > limit:
            raise PayloadTooLarge(
                f"body: larger than the limit of {limit} bytes",
                fields=[FieldError("body", "max-size", f"at most {limit} bytes")],
            )

    def _validate(self, event: ev.Event) -> ev.Event:
        errors: list[FieldError] = []
        if event.type != ev.FEEDBACK:
            errors.append(FieldError("type", "equals " + ev.FEEDBACK,
                                     f"type must be {ev.FEEDBACK}, got {event.type!r}"))
        if event.datacontenttype and not _json_ct(event.datacontenttype):
            errors.append(FieldError("datacontenttype", "json",
                                     "feedback data must be application/json"))
        elif isinstance(event.data, bytes | bytearray):
            errors.append(FieldError("data", "json", "feedback data must be a JSON object"))
        else:
            try:
                ev.FeedbackData.parse(event.data)
            except ValidationFailed as e:
                errors.extend(e.fields)
        if errors:
            raise ValidationFailed(errors)
        return event

    def _send(self, events: list[ev.Event]) -> None:
        """Write events and wait until Kafka acknowledged every one (acks=all)."""
        from kafka.errors import KafkaError

        from driftloop.bus import send_event

        producer = self.producer()
        timeout = self.settings.intake_send_timeout_s
        try:
            futures = [send_event(producer, topics.FEEDBACK, e, key=e.data["model"])
                       for e in events]
            deadline = time.monotonic() + timeout
            for f in futures:
                f.get(timeout=max(0.1, deadline - time.monotonic()))
        except (KafkaError, OSError) as e:
            self._discard_producer(producer)
            raise self._unavailable(e) from e

    def _discard_producer(self, producer: KafkaProducer) -> None:
        """Drop a producer that failed so the next request starts from a clean one: an
        idempotent producer can stay wedged after its broker restarted. What it still
        held was answered with 503, so the client retries and downstream dedup applies."""
        with self._lock:
            if self._producer is producer:
                self._producer = None
            else:
                return
        threading.Thread(target=producer.close, kwargs={"timeout": 0}, daemon=True).start()

    def _post_batch(self, body: bytes) -> Response:
        items = ev.split_batch(body)
        results: list[dict[str, Any]] = [{} for _ in items]
        valid: list[tuple[int, ev.Event]] = []
        for i, item in enumerate(items):
            try:
                event = self._validate(ev.from_structured(item))
            except DriftloopError as e:
                self.metrics.rejected.labels(e.reason).inc()
                ident = item.get("id") if isinstance(item, dict) else None
                results[i] = {"index": i, "id": ident, "status": e.status, **e.to_dict()}
            else:
                valid.append((i, event))
        accepted = 0
        if valid:
            try:
                self._send([e for _, e in valid])
            except Unavailable as e:
                self.metrics.rejected.labels(e.reason).inc(len(valid))
                for i, event in valid:
                    results[i] = {"index": i, "id": event.id, "status": 503, **e.to_dict()}
            else:
                accepted = len(valid)
                self.metrics.accepted.labels("batch").inc(accepted)
                for i, event in valid:
                    results[i] = {"index": i, "id": event.id, "status": 202}
        statuses = {r["status"] for r in results}
        if statuses == {202}:
            status = 202
        elif 202 in statuses:
            status = 207
        elif statuses == {503}:
            status = 503
        else:
            status = 400 if all(400 <= s < 500 for s in statuses) else 503
        body_obj = {"accepted": accepted, "rejected": len(items) - accepted, "results": results}
        headers = ({"retry-after": str(self.settings.intake_retry_after_s)}
                   if 503 in statuses else None)
        return Response.json(status, body_obj, headers)


def _json_ct(content_type: str) -> bool:
    ct = content_type.split(";", 1)[0].strip().lower()
    return ct == "application/json" or ct.endswith("+json")


def _not_allowed() -> Response:
    return Response.json(405, {"error": "method_not_allowed", "message": "method not allowed"})
