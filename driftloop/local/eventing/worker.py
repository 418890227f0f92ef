"""The route consumers: Kafka → filter → sink, in partition order, at least once.

A route consumer commits a record's offset only once the record is done: delivered with a
2xx, filtered out, or dead-lettered. A partition the route's group has no offset for gets one
before the first poll (``initialOffset``: its start or its end), as Knative's KafkaSource
initializes its consumer group; from then on the route only ever resumes from committed
offsets, and a position Kafka no longer holds resets to the earliest record (delivered
again, never skipped). A route never dies on one record: a reply or dead
letter that cannot be written is retried, then the record is parked by reference (no
value); a failure of Kafka itself makes the route wait and re-read from its committed
offsets, marked failing meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from driftloop import events as ev
from driftloop import topics as topic_names
from driftloop.local.eventing.delivery import (
    Deliverer,
    Stopped,
    delivery_token,
    matches,
    record_to_http,
    reply_to_kafka,
)
from driftloop.local.eventing.manifests import EventingError, Route
from driftloop.local.eventing.metrics import DispatcherMetrics

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer

    from driftloop.settings import Settings

__all__ = [
    "MAX_ROUTE_BACKOFF_S",
    "RECORD_ATTEMPTS",
    "RouteWorker",
]

log = logging.getLogger("driftloop.dispatcher")


MAX_POLL_RECORDS = 500
MAX_QUEUED = 2000
"""Records a partition's lane may have waiting before the partition is paused."""
MAX_QUEUED_BYTES = 16 * 1024 * 1024
"""Bytes of record values a lane may have waiting before its partition is paused."""
COMMIT_INTERVAL_S = 0.05
"""Longest a done record waits for its offset commit: what a crash may redeliver."""
RECORD_ATTEMPTS = 3
"""Tries of a reply or a dead letter before the record is parked by reference only."""
MAX_ROUTE_BACKOFF_S = 30.0
ACK_MARGIN_S = 5.0
"""Wait for an acknowledgement this much past the producer's delivery timeout: the producer
fails the record itself, so a try given up on is never written after its retry."""


class RouteWorker(threading.Thread):
    """One consumer group per route: poll, filter, deliver in partition order, commit.

    A route never dies on one record: a reply or dead letter that cannot be written is
    retried, then the record is parked by reference (no value); a failure of Kafka itself
    makes the route wait and re-read from its committed offsets, marked failing meanwhile.
    """

    def __init__(
        self,
        route: Route,
        url: str,
        settings: Settings,
        producer: KafkaProducer,
        dead_letter_topics: Mapping[str, str],
        stop: threading.Event,
        metrics: DispatcherMetrics | None = None,
        share: tuple[int, int] = (0, 1),
    ) -> None:
        super().__init__(name=f"route-{route.name}-{share[0]}", daemon=True)
        self.share = share
        """(index, count): this consumer's part of the route's partitions."""
        self.route, self.url, self.settings = route, url, settings
        self.producer, self.dead_letter_topics, self.stop = producer, dead_letter_topics, stop
        self.metrics = metrics or DispatcherMetrics()
        self.delivered = 0
        self.dead_lettered = 0
        self.truncated = 0
        self.errors = 0
        self.failing = False
        self.last_error: str | None = None
        self.error: BaseException | None = None
        """Set only if the thread itself ended on an error it could not survive."""
        self._halt = stop
        """Set when this consumer's lanes must end (the worker stops, or a lane failed)."""
        self._lock = threading.Lock()
        """Guards the counters: the lanes update them concurrently."""
        self.metrics.route_up.labels(route.name).set(1)

    def state(self) -> dict[str, Any]:
        """What the heartbeat shows of this route."""
        return {
            "name": self.route.name,
            "delivered": self.delivered,
            "dead_lettered": self.dead_lettered,
            "dead_letters_truncated": self.truncated,
            "errors": self.errors,
            "failing": self.failing or not self.is_alive(),
            "last_error": self.last_error,
        }

    def _failed(self, what: str, e: BaseException) -> None:
        with self._lock:
            self.errors += 1
        self.failing = True
        self.last_error = f"{what}: {type(e).__name__}: {e}"[:500]
        self.metrics.errors.labels(self.route.name).inc()
        self.metrics.route_up.labels(self.route.name).set(0)

    def _progressed(self) -> None:
        if self.failing:
            self.failing = False
            self.metrics.route_up.labels(self.route.name).set(1)

    def _count_delivered(self) -> None:
        with self._lock:
            self.delivered += 1
        self.metrics.delivered.labels(self.route.name).inc()

    def run(self) -> None:
        failures = 0
        try:
            while not self.stop.is_set():
                try:
                    self._consume()
                    return
                except Stopped:
                    return
                except Exception as e:
                    failures += 1
                    self._failed("route", e)
                    log.exception("route %s failed; retrying from its offsets", self.route.name)
                    wait = min(MAX_ROUTE_BACKOFF_S, 0.5 * 2 ** min(failures, 8))
                    if self.stop.wait(wait):
                        return
        except BaseException as e:  # pragma: no cover - interpreter shutdown and the like
            self.error = e
            raise

    def _consume(self) -> None:
        """Poll and hand each partition's records to its lane; commit what the lanes have
        done at most COMMIT_INTERVAL_S later. A partition whose lane holds MAX_QUEUED records
        or MAX_QUEUED_BYTES is paused until it has worked off three quarters. A lane's
        error (Kafka, say) ends every lane and the consumer; the route then re-reads from
        its committed offsets."""
        from driftloop import bus

        consumer: KafkaConsumer | None = None
        halt = threading.Event()
        self._halt = halt
        lanes: dict[Any, _Lane] = {}
        committed: dict[Any, int] = {}
        try:
            consumer = bus.make_consumer(
                self.settings,
                [],
                self.route.group,
                max_poll_records=MAX_POLL_RECORDS,
                metadata_max_age_ms=5_000,
                auto_offset_reset="earliest",
            )
            partitions = self._partitions(consumer)
            consumer.assign(partitions)
            self._initialize_offsets(consumer, partitions)
            paused: set[Any] = set()
            last_commit = time.monotonic()
            while not self.stop.is_set():
                for lane in lanes.values():
                    if lane.error is not None:
                        raise lane.error
                busy = any(lane.behind(committed.get(tp)) for tp, lane in lanes.items())
                wait_ms = self.settings.dispatcher_poll_ms
                if busy:
                    wait_ms = min(wait_ms, int(COMMIT_INTERVAL_S * 1000))
                for tp, records in consumer.poll(timeout_ms=wait_ms).items():
                    if tp not in lanes:
                        lanes[tp] = _Lane(self, tp, halt)
                        lanes[tp].start()
                    lanes[tp].put(records)
                for tp, lane in lanes.items():
                    fill = max(
                        lane.records.qsize() / MAX_QUEUED, lane.queued_bytes / MAX_QUEUED_BYTES
                    )
                    if fill >= 1 and tp not in paused:
                        consumer.pause(tp)
                        paused.add(tp)
                    elif fill < 0.25 and tp in paused:
                        consumer.resume(tp)
                        paused.discard(tp)
                if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    self._commit_done(consumer, lanes, committed)
                    last_commit = time.monotonic()
        finally:
            halt.set()
            for lane in lanes.values():
                lane.join()
            if consumer is not None:
                try:  # what the lanes delivered is durable before the consumer goes
                    self._commit_done(consumer, lanes, committed)
                except Exception as e:
                    log.warning("route %s: final commit failed: %s", self.route.name, e)
                consumer.close(autocommit=False)

    def _partitions(self, consumer: KafkaConsumer) -> list[Any]:
        """Every partition of the route's topics, waiting for topics that do not exist yet.

        One local dispatcher owns each route, so partitions are assigned directly (no group
        rebalance to wait for); offsets are still committed under the route's group id.
        """
        from kafka.structs import TopicPartition

        while True:
            found = {t: consumer.partitions_for_topic(t) for t in self.route.topics}
            if all(found.values()):
                every = [TopicPartition(t, p) for t, ps in found.items() for p in sorted(ps or ())]
                return every[self.share[0] :: self.share[1]]
            missing = [t for t, ps in found.items() if not ps]
            log.info("route %s: waiting for topics %s", self.route.name, missing)
            if self.stop.wait(1.0):
                raise Stopped

    def _initialize_offsets(self, consumer: KafkaConsumer, partitions: list[Any]) -> None:
        """Commit ``initialOffset`` (the partition's start or end) for each partition the
        group has no committed offset for, before anything is read.

        ``latest`` then means "records after the route first started", not "records after
        this consumer started": a consumer that restarts (a Kafka error, the dispatcher
        killed, a rescale) resumes from what was committed even on a partition it never
        read from, instead of skipping what arrived there while it was down.
        """
        from kafka.structs import OffsetAndMetadata

        fresh = [tp for tp in partitions if consumer.committed(tp) is None]
        if not fresh:
            return
        if self.route.initial_offset == "latest":
            start = consumer.end_offsets(fresh)
        else:
            start = consumer.beginning_offsets(fresh)
        consumer.commit({tp: OffsetAndMetadata(start[tp], "", -1) for tp in fresh})
        log.info(
            "route %s: group %s starts at the %s offset of %s",
            self.route.name,
            self.route.group,
            self.route.initial_offset,
            ", ".join(f"{tp.topic}/{tp.partition}@{start[tp]}" for tp in fresh),
        )

    @staticmethod
    def _commit_done(
        consumer: KafkaConsumer, lanes: Mapping[Any, _Lane], committed: dict[Any, int]
    ) -> None:
        """Commit, synchronously, the offsets after each partition's last done record."""
        from kafka.structs import OffsetAndMetadata

        done = {tp: lane.done for tp, lane in lanes.items() if lane.done is not None}
        fresh = {tp: o for tp, o in done.items() if committed.get(tp) != o}
        if fresh:
            consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in fresh.items()})
            committed.update(fresh)

    @property
    def _ack_timeout_s(self) -> float:
        return self.settings.dispatcher_kafka_timeout_s + ACK_MARGIN_S

    def _handle_one(self, rec: Any, deliverer: Deliverer) -> None:
        """One record, whatever it holds: an error of the record itself (a header HTTP cannot
        carry, …) parks it; an error of Kafka propagates (the route waits and re-reads)."""
        from kafka.errors import KafkaError

        try:
            self._handle(rec, deliverer)
        except (Stopped, KafkaError):
            raise
        except Exception as e:
            self._failed("record", e)
            log.exception(
                "route %s: record %s/%d@%d", self.route.name, rec.topic, rec.partition, rec.offset
            )
            self._park(
                rec,
                f"{self.route.name}: the dispatcher cannot deliver this record: "
                f"{type(e).__name__}: {e}",
            )

    def _handle(self, rec: Any, deliverer: Deliverer) -> None:
        try:
            http, body, attrs = record_to_http(rec.value, rec.headers, rec.key)
        except EventingError as e:
            if self.route.dead_letters_invalid:
                self._park(rec, f"{self.route.name}: {e}")
            return
        if not matches(self.route.filter, attrs):
            return
        outcome = deliverer.deliver(self.url, http, body, self.route.delivery)
        if not outcome.delivered:
            self._park(
                rec,
                f"delivery to {self.route.sink} ({self.route.name}) failed after "
                f"{outcome.attempts} attempt(s): {outcome.reason}",
                knative_error=(self.url, outcome.status),
            )
            return
        self._count_delivered()
        if self.route.reply_topic and outcome.reply is not None:
            self._forward_reply(rec, *outcome.reply)

    def _forward_reply(self, rec: Any, headers: dict[str, str], body: bytes) -> None:
        """Publish the subscriber's reply event to the broker topic; a reply that is not a
        valid CloudEvent or cannot be published parks the record with the reason."""
        try:
            reply = reply_to_kafka(headers, body)
            if reply is not None:
                self._retrying(lambda: self._send_reply(reply), "reply")
        except Stopped:
            raise
        except Exception as e:
            self._park(
                rec,
                f"delivered to {self.route.sink} ({self.route.name}) but its reply "
                f"could not be published to {self.route.reply_topic}: "
                f"{type(e).__name__}: {e}",
            )

    def _send_reply(self, reply: ev.KafkaRecord) -> None:
        assert self.route.reply_topic is not None
        self.producer.send(
            self.route.reply_topic, key=reply.key, value=reply.value, headers=reply.headers
        ).get(self._ack_timeout_s)

    def _retrying(self, action: Callable[[], None], what: str) -> None:
        """``action`` up to RECORD_ATTEMPTS times with a short backoff; the last error raises."""
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                action()
                return
            except Exception as e:
                self._failed(what, e)
                log.warning(
                    "route %s: %s failed (attempt %d): %s", self.route.name, what, attempt, e
                )
                if attempt == RECORD_ATTEMPTS:
                    raise
                if self._halt.wait(0.5 * 2 ** (attempt - 1)):
                    raise Stopped from e

    def _park(
        self, rec: Any, reason: str, knative_error: tuple[str, int | None] | None = None
    ) -> None:
        """Dead-letter the record; if even that fails, dead-letter it by reference only."""
        try:
            self._retrying(lambda: self._dead_letter(rec, reason, knative_error), "dead letter")
        except Stopped:
            raise
        except Exception as e:
            self._dead_letter(
                rec,
                f"{reason} (value dropped: {type(e).__name__}: {e})",
                knative_error,
                by_reference=True,
            )

    def _dead_letter(
        self,
        rec: Any,
        reason: str,
        knative_error: tuple[str, int | None] | None = None,
        *,
        by_reference: bool = False,
    ) -> None:
        """Park the record with its reason; a failed delivery also carries the
        ``knativeerrordest``/``knativeerrorcode`` extensions Knative adds on a cluster.
        A value over ``dead_letter_max_value_bytes`` is cut (see ``bus.dead_letter``)."""
        from driftloop import bus

        name = self.route.delivery.dead_letter
        if name is None:
            log.warning(
                "dropping record %s/%d@%d (no dead-letter sink): %s",
                rec.topic,
                rec.partition,
                rec.offset,
                reason,
            )
            return
        topic = self.dead_letter_topics.get(name, topic_names.DEADLETTER)
        headers = [(k, v or b"") for k, v in rec.headers]
        if by_reference:
            headers = [(k, v) for k, v in headers if k.startswith("ce_") and len(v) <= 1024]
        headers.append(("dl_sink", self.route.sink.encode()))
        if knative_error is not None and any(k == "ce_specversion" for k, _ in headers):
            dest, code = knative_error
            headers.append(("ce_knativeerrordest", dest.encode()))
            if code is not None:
                headers.append(("ce_knativeerrorcode", str(code).encode()))
        limit = self.settings.dead_letter_max_value_bytes
        value = None if by_reference else rec.value
        fut = bus.dead_letter(
            self.producer,
            reason=reason,
            source_topic=rec.topic,
            value=value,
            headers=headers,
            key=rec.key,
            partition=rec.partition,
            offset=rec.offset,
            max_value_bytes=limit,
            topic=topic,
        )
        fut.get(timeout=self._ack_timeout_s)
        cut = value is not None and len(value) > limit
        with self._lock:
            self.dead_lettered += 1
            self.truncated += cut
        self.metrics.dead_lettered.labels(self.route.name).inc()
        if cut:
            self.metrics.truncated.labels(self.route.name).inc()
        log.warning("dead-lettered %s/%d@%d: %s", rec.topic, rec.partition, rec.offset, reason)


class _Lane(threading.Thread):
    """Delivers one partition's records one at a time, in offset order, with a keep-alive
    connection of its own; ``done`` is the offset after its last finished record."""

    def __init__(self, worker: RouteWorker, tp: Any, halt: threading.Event) -> None:
        super().__init__(name=f"{worker.name}-p{tp.partition}", daemon=True)
        self.worker, self.halt = worker, halt
        self.records: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.done: int | None = None
        self.last: int | None = None
        """Offset after the last record handed to the lane."""
        self.error: BaseException | None = None
        self.queued_bytes = 0
        """Bytes of the values waiting in ``records``."""
        self._lock = threading.Lock()

    def put(self, records: list[Any]) -> None:
        size = sum(len(rec.value or b"") for rec in records)
        with self._lock:
            self.queued_bytes += size
        for rec in records:
            self.records.put(rec)
        self.last = records[-1].offset + 1

    def behind(self, committed: int | None) -> bool:
        """Whether records are queued, in flight or done but not committed yet."""
        return self.last is not None and (self.done != self.last or committed != self.done)

    def run(self) -> None:
        w = self.worker
        deliverer = Deliverer(
            self.halt, w.settings.dispatcher_timeout_s, token=delivery_token(w.settings)
        )
        try:
            while not self.halt.is_set():
                try:
                    rec = self.records.get(timeout=0.1)
                except queue.Empty:
                    continue
                with self._lock:
                    self.queued_bytes -= len(rec.value or b"")
                w._handle_one(rec, deliverer)
                w._progressed()
                self.done = rec.offset + 1
        except Stopped:
            pass
        except Exception as e:  # ends the route's consumer, which re-reads from its offsets
            self.error = e
        finally:
            deliverer.close()
