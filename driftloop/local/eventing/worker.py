"""The delivery workers: one per route consumer (Kafka → sink, in partition order) and
one for the PingSources.

A route consumer commits a record's offset only once the record is done: delivered with a
2xx, filtered out, or dead-lettered. A route never dies on one record: a reply or dead
letter that cannot be written is retried, then the record is parked by reference (no
value); a failure of Kafka itself makes the route wait and re-read from its committed
offsets, marked failing meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from driftloop import events as ev
from driftloop import topics as topic_names
from driftloop.local.eventing.delivery import (
    Deliverer,
    Outcome,
    Stopped,
    delivery_token,
    matches,
    record_to_http,
    reply_to_kafka,
)
from driftloop.local.eventing.manifests import Delivery, EventingError, Ping, Route
from driftloop.local.eventing.schedule import next_fire, ping_event

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer

    from driftloop.settings import Settings

__all__ = [
    "DEFAULT_PING_DELIVERY_RETRY",
    "MAX_ROUTE_BACKOFF_S",
    "RECORD_ATTEMPTS",
    "DispatcherMetrics",
    "PingWorker",
    "RouteWorker",
]

log = logging.getLogger("driftloop.dispatcher")

DEFAULT_PING_DELIVERY_RETRY = 3


class DispatcherMetrics:
    """The dispatcher's own Prometheus metrics (per route), in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge

        self.registry = CollectorRegistry()
        self.delivered = Counter(
            "driftloop_dispatcher_delivered",
            "Records delivered with a 2xx.",
            ["route"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "driftloop_dispatcher_dead_lettered",
            "Records parked on a dead-letter topic.",
            ["route"],
            registry=self.registry,
        )
        self.truncated = Counter(
            "driftloop_dispatcher_dead_letters_truncated",
            "Dead letters whose value was cut to DRIFTLOOP_DEAD_LETTER_MAX_VALUE_BYTES.",
            ["route"],
            registry=self.registry,
        )
        self.errors = Counter(
            "driftloop_dispatcher_errors",
            "Failures of the dispatcher itself (Kafka reads, replies, dead letters).",
            ["route"],
            registry=self.registry,
        )
        self.route_up = Gauge(
            "driftloop_dispatcher_route_up",
            "1 while a route makes progress, 0 while it fails and retries.",
            ["route"],
            registry=self.registry,
        )


RECORD_ATTEMPTS = 3
"""Tries of a reply or a dead letter before the record is parked by reference only."""
MAX_ROUTE_BACKOFF_S = 30.0


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
        from driftloop import bus

        consumer: KafkaConsumer | None = None
        deliverer = Deliverer(
            self.stop, self.settings.dispatcher_timeout_s, token=delivery_token(self.settings)
        )
        try:
            consumer = bus.make_consumer(
                self.settings,
                [],
                self.route.group,
                max_poll_records=100,
                metadata_max_age_ms=5_000,
                auto_offset_reset=self.route.initial_offset,
            )
            consumer.assign(self._partitions(consumer))
            while not self.stop.is_set():
                batch = consumer.poll(timeout_ms=self.settings.dispatcher_poll_ms)
                done: dict[Any, int] = {}
                try:
                    for tp, records in batch.items():
                        for rec in records:
                            self._handle_one(rec, deliverer)
                            self._progressed()
                            done[tp] = rec.offset + 1
                            self._commit(consumer, {tp: done[tp]}, sync=False)
                finally:
                    if done:  # the batch's progress is durable before the next poll
                        self._commit(consumer, done, sync=True)
        finally:
            deliverer.close()
            if consumer is not None:
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

    @staticmethod
    def _commit(consumer: KafkaConsumer, offsets: Mapping[Any, int], *, sync: bool) -> None:
        """Commit offsets of records that are done. Each record's commit is sent at once
        (asynchronously, in order); the batch's last offsets are committed synchronously."""
        from kafka.structs import OffsetAndMetadata

        commit = {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
        if sync:
            consumer.commit(commit)
        else:
            consumer.commit_async(commit)

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
        ).get(30)

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
                if self.stop.wait(0.5 * 2 ** (attempt - 1)):
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
        fut.get(timeout=30)
        self.dead_lettered += 1
        self.metrics.dead_lettered.labels(self.route.name).inc()
        if value is not None and len(value) > limit:
            self.truncated += 1
            self.metrics.truncated.labels(self.route.name).inc()
        log.warning("dead-lettered %s/%d@%d: %s", rec.topic, rec.partition, rec.offset, reason)


class PingWorker(threading.Thread):
    """Fires every PingSource on its schedule (no catch-up of missed ticks, as in Knative)."""

    def __init__(
        self,
        pings: Sequence[tuple[Ping, str]],
        stop: threading.Event,
        settings: Settings,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(name="pings", daemon=True)
        self.pings, self.stop, self.settings, self.now = pings, stop, settings, now
        self.fired: dict[str, int] = {p.name: 0 for p, _ in pings}

    def run(self) -> None:
        deliverer = Deliverer(
            self.stop, self.settings.dispatcher_timeout_s, token=delivery_token(self.settings)
        )
        delivery = Delivery(retry=DEFAULT_PING_DELIVERY_RETRY, backoff_delay_s=0.2)
        start = self.now()
        due = {p.name: next_fire(p.schedule, start, p.timezone) for p, _ in self.pings}
        try:
            while not self.stop.is_set() and self.pings:
                now = self.now()
                for ping, url in self.pings:
                    if due[ping.name] <= now:
                        headers, body = ping_event(ping, due[ping.name])
                        try:
                            outcome = deliverer.deliver(url, headers, body, delivery)
                        except Stopped:
                            raise
                        except Exception as e:  # one tick lost, never the schedule
                            outcome = Outcome(False, 1, None, f"{type(e).__name__}: {e}")
                        self.fired[ping.name] += 1
                        if not outcome.delivered:
                            log.warning(
                                "ping %s to %s failed: %s", ping.name, ping.sink, outcome.reason
                            )
                        due[ping.name] = next_fire(
                            ping.schedule, max(now, due[ping.name]), ping.timezone
                        )
                wait = min((d - self.now()).total_seconds() for d in due.values())
                self.stop.wait(max(0.01, min(wait, 1.0)))
        except Stopped:
            pass
        finally:
            deliverer.close()
