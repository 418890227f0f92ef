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
  The producer's delivery timeout is the send timeout and a request waits for the
  delivery report (plus ``DELIVERY_GRACE_S``), so a 503 is definitive except when
  librdkafka can only say "possibly persisted" (a request in flight when its timeout or
  the connection ended): that record may show in the topic later.
- Idempotent within a replay window (``intake_dedup_window_s``, 900 s; 0 disables): an
  event whose (source, id) - never the id alone - ``driftloop.feedback`` already holds
  from the window is answered 202 (``"duplicate": true``) and not written again (the
  CloudEvents rule: the same source and id are the same event). Each process reads the
  topic from now minus the window on start (read_committed, every partition; until it
  reached the end offsets every POST is 503 with ``Retry-After``: a retry is never
  risked as a second write) and keeps reading it, so a retry that lands on another
  replica is recognised once the first write shows in the topic; its own writes count
  from their acknowledgement. Concurrent requests for one (source, id) in one process:
  the later waits for the first's outcome (202 duplicate, or 503 when it failed). A
  retry of an event this process answered 503 after trying to write it is unsettled: it
  is written only after the process read the topic up to the end offsets Kafka gives at
  the retry (a "possibly persisted" first write that did land is then in the window:
  202 duplicate); when the topic cannot be read to its end in the send timeout the retry
  is 503 again. A batch is judged per event, a repeat inside one batch follows its first
  occurrence. Gaps: a retry sent to another replica before the first write is visible
  there, a first write that Kafka commits only after the retry's end offsets were taken
  (a produce request still waiting for its replicas), and a window that filled
  (``intake_dedup_max_entries``) or expired; downstream still keeps one record per
  (source, id).
- Batches are handled per event: valid events are written, invalid ones reported with
  their index; the status is 202 (all accepted), 207 (mixed) or the common 4xx/503. Every
  event is validated and encoded before any is sent, so one bad event never fails the
  others; a batch holds at most ``intake_max_batch_events`` events (413 above).
- Ids (CloudEvent id, source, ``prediction_id``) are printable ASCII of bounded length;
  the ``model`` extension, when sent, must equal ``data.model``.
- Bodies are parsed by ``events.load_json``: nesting, number size and Unicode are bounded
  there for every surface.
- Downstream stays idempotent too: the record keeps the event's (source, id), and every
  consumer that materialises feedback (archive, join) keeps the first record per
  (source, id) and drops repeats, whatever the window missed.
"""

from __future__ import annotations

import logging
import re
import threading
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
from driftloop.intake_window import Claims, FeedbackTail, Key, ReplayWindow, event_key
from driftloop.naming import SAFE_ID_RULE, is_safe_id
from driftloop.publisher import LazyProducer

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer

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

DELIVERY_GRACE_S = 2.0
"""How much longer than the producer's delivery timeout a request waits for the delivery
report (librdkafka checks message timeouts about once a second)."""


class _Duplicate:
    """The outcome of an event the feedback topic already holds."""


DUPLICATE = _Duplicate()
Outcome = DriftloopError | _Duplicate | None
"""Per event: None written now, ``DUPLICATE`` held already, or the error refusing it."""


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
        self.duplicates = Counter(
            "driftloop_intake_events_duplicate",
            "Feedback events answered 202 without a write: their (source, id) was in the "
            "replay window (also counted in accepted).",
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
        consumer_factory: Callable[[], KafkaConsumer] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = IntakeMetrics()
        self._tokens = TokenSet(sorted(settings.intake_token_set))
        self._producer = LazyProducer(producer_factory or self._default_producer)
        self._openapi: bytes | None = None
        self.window: ReplayWindow | None = None
        self._tail: FeedbackTail | None = None
        if settings.intake_dedup_window_s > 0:
            self.window = ReplayWindow(
                settings.intake_dedup_window_s, settings.intake_dedup_max_entries
            )
            self._tail = FeedbackTail(settings, self.window, consumer_factory)
        self._unsettled = ReplayWindow(
            max(settings.intake_dedup_window_s, 1.0), settings.intake_dedup_max_entries
        )
        """Keys this process answered 503 after trying to write them (rule above)."""
        self._claims = Claims()
        self._tail_lock = threading.Lock()
        self._tail_started = False

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
            # What a request waits: the delivery report settles the record before the
            # answer, so a 503 is not followed by a late write (rule above).
            delivery_timeout_ms=timeout_ms,
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
        if self._tail is not None:
            self._tail.stop()
        self._producer.close()

    # ------------------------------------------------------------------ replay window

    def open(self) -> None:
        """Start reading the replay window as soon as the process builds the service."""
        self._start_tail()

    def _start_tail(self) -> None:
        with self._tail_lock:
            if self._tail is not None and not self._tail_started:
                self._tail.start()
                self._tail_started = True

    def _await_window(self) -> None:
        """Fail closed: ``Unavailable`` until the window holds what the topic held at start
        (a retry must not be written again just because this process has not read it)."""
        if self._tail is None:
            return
        self._start_tail()
        if not self._tail.wait_ready(self.settings.intake_send_timeout_s):
            raise Unavailable(
                "feedback-intake is still reading the feedback topic's replay window",
                retry_after_s=self.settings.intake_retry_after_s,
            )

    def _write(self, keyed: list[tuple[Key, ev.KafkaRecord]]) -> list[Outcome]:
        """Write the records whose key is not in the window (nor being written by another
        request of this process: its outcome is waited for); per record its outcome.
        ``Unavailable`` when the window is not caught up."""
        window = self.window
        if window is None:
            return list(self._send_or_unavailable([r for _, r in keyed]))
        self._await_window()
        outcomes: list[Outcome] = [None] * len(keyed)
        first: dict[Key, int] = {}
        follows: dict[int, int] = {}
        owned: list[int] = []
        waits: list[tuple[int, threading.Event]] = []
        try:
            for i, (key, _) in enumerate(keyed):
                if key in first:
                    follows[i] = first[key]
                    continue
                first[key] = i
                if window.seen(key):
                    outcomes[i] = DUPLICATE
                    continue
                other = self._claims.claim(key)
                if other is not None:
                    waits.append((i, other))
                elif window.seen(key):  # written and released since the check above
                    self._claims.release(key)
                    outcomes[i] = DUPLICATE
                else:
                    owned.append(i)
            to_send = self._settle([(i, keyed[i][0]) for i in owned], outcomes)
            if to_send:
                sent = self._send_or_unavailable([keyed[i][1] for i in to_send])
                for i, outcome in zip(to_send, sent, strict=True):
                    outcomes[i] = outcome
                    if outcome is None:
                        window.add(keyed[i][0])  # before the claim is released
                        self._unsettled.discard(keyed[i][0])
                    elif isinstance(outcome, Unavailable):  # Kafka may hold it all the same
                        self._unsettled.add(keyed[i][0])
        finally:
            for i in owned:
                self._claims.release(keyed[i][0])
        wait_s = self.settings.intake_send_timeout_s + DELIVERY_GRACE_S + 1.0
        for i, done in waits:
            done.wait(wait_s)
            if window.seen(keyed[i][0]):
                outcomes[i] = DUPLICATE
            else:  # the first write failed (or is still pending): the app retries
                outcomes[i] = self._unavailable(TimeoutError("a concurrent write failed"))
        for i, j in follows.items():
            outcomes[i] = DUPLICATE if outcomes[j] is None else outcomes[j]
        return outcomes

    def _settle(self, owned: list[tuple[int, Key]], outcomes: list[Outcome]) -> list[int]:
        """The indexes of ``owned`` to write. A key answered 503 before is first looked up
        in the window once the tail read the topic to its current end: found, it is a
        duplicate; the tail cannot get there in time, 503 (never a risked second write)."""
        assert self.window is not None and self._tail is not None
        unsettled = [(i, key) for i, key in owned if self._unsettled.seen(key)]
        if not unsettled:
            return [i for i, _ in owned]
        decided: set[int] = set()
        if not self._tail.sync(self.settings.intake_send_timeout_s):
            for i, _ in unsettled:
                outcomes[i] = Unavailable(
                    "feedback-intake cannot yet read the feedback topic to its end to settle "
                    "an earlier write of this event",
                    retry_after_s=self.settings.intake_retry_after_s,
                )
                decided.add(i)
        else:
            for i, key in unsettled:
                if self.window.seen(key):
                    outcomes[i] = DUPLICATE
                    self._unsettled.discard(key)
                    decided.add(i)
        return [i for i, _ in owned if i not in decided]

    def _send_or_unavailable(self, records: list[ev.KafkaRecord]) -> list[Outcome]:
        try:
            return list(self._send(records))
        except Unavailable as e:
            return [e] * len(records)

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
        outcome = self._write([(event_key(event.source, event.id), _record(event))])[0]
        if isinstance(outcome, DriftloopError):
            raise outcome
        body: dict[str, Any] = {"id": event.id, "source": event.source, "status": "accepted"}
        if outcome is DUPLICATE:
            body["duplicate"] = True
            self.metrics.duplicates.inc()
        return Response.json(202, body)

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
        timeout = self.settings.intake_send_timeout_s + DELIVERY_GRACE_S
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
        valid: list[tuple[int, ev.Event, tuple[Key, ev.KafkaRecord]]] = []
        for i, item in enumerate(items):
            try:
                event = self._validate(ev.from_structured(item))
                valid.append((i, event, (event_key(event.source, event.id), _record(event))))
            except DriftloopError as e:
                results[i] = self._rejected(i, item, e)
            except Exception:  # one event's defect stays that event's answer
                log.exception("intake could not handle batch event %d", i)
                results[i] = self._rejected(i, item, _internal())
        accepted = duplicates = 0
        if valid:
            try:
                outcomes = self._write([r for _, _, r in valid])
            except Unavailable as e:
                self.metrics.rejected.labels(e.reason).inc(len(valid))
                for i, event, _ in valid:
                    results[i] = {"index": i, "id": event.id, "status": 503, **e.to_dict()}
            else:
                for (i, event, _), outcome in zip(valid, outcomes, strict=True):
                    if isinstance(outcome, DriftloopError):
                        results[i] = self._rejected(i, event.id, outcome)
                        continue
                    accepted += 1
                    results[i] = {"index": i, "id": event.id, "status": 202}
                    if outcome is DUPLICATE:
                        duplicates += 1
                        results[i]["duplicate"] = True
                self.metrics.accepted.labels("batch").inc(accepted)
                self.metrics.duplicates.inc(duplicates)
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
