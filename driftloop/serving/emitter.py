"""Prediction events to Kafka, off the inference path, kept on disk until Kafka has them.

``offer`` never blocks on the network and never raises. It appends the Kafka record to
the process's write-ahead spool (``driftloop.serving.spool``: a local segment file, one
plain ``write``, no ``fsync`` unless asked) and puts it on a bounded queue. One background
thread drains the queue into a Kafka producer; Kafka's acknowledgement marks the spooled
record done, and a segment whose records are all acknowledged is deleted. What the queue
cannot take, or Kafka fails, stays in the spool and is sent from there once the sender is
free again. On start the emitter replays the records dead processes left in the spool
(at least once). So an answered prediction survives a kill of the server (SIGKILL,
OOM); a machine crash can lose the last writes the OS had not flushed.

When the spool cannot be written (disk full, permission, at its size limit) the event is
counted (``driftloop_prediction_spool_errors_total``) and still queued: it then reaches
Kafka unless the process dies first. Without a spool (``spool=None``), or when the queue
is full for an event that is not spooled, the event is dropped and counted, so inference
latency and availability never depend on Kafka or the disk.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from driftloop import topics
from driftloop.events.kafka import KafkaRecord, to_kafka

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from prometheus_client import CollectorRegistry

    from driftloop.events import Event
    from driftloop.serving.spool import Ref, Spool

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 1_000
"""Records sent from the spool's backlog and not yet answered by Kafka, at most."""
RETRY_S = 5.0
"""After Kafka failed a spooled record, how long before the backlog is sent again."""

_Item = tuple[str, KafkaRecord, "Ref | None"]


class PredictionEmitter:
    """A spool, a bounded queue and one sender thread; counts sent, dropped and failed events."""

    def __init__(
        self,
        producer_factory: Callable[[], KafkaProducer],
        *,
        maxsize: int = 10_000,
        topic: str = topics.PREDICTIONS,
        registry: CollectorRegistry | None = None,
        spool: Spool | None = None,
    ) -> None:
        from prometheus_client import Counter, Gauge

        self._factory = producer_factory
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize)
        self._topic = topic
        self._producer: KafkaProducer | None = None
        self._stop = threading.Event()
        self._spool = spool
        self._in_flight = 0
        self._retry_at = 0.0
        self._lock = threading.Lock()
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
        self.sent = Counter("driftloop_prediction_events_sent",
                            "Prediction events Kafka acknowledged.", **kw)
        self.dropped = Counter("driftloop_prediction_events_dropped",
                               "Prediction events dropped, by reason.", ["reason"], **kw)
        self.spool_errors = Counter(
            "driftloop_prediction_spool_errors",
            "Prediction events the spool could not keep (disk full, permission, at its "
            "limit): queued from memory only, so a kill would lose them.", **kw)
        self.depth = Gauge("driftloop_prediction_events_queued",
                           "Prediction events waiting for Kafka.", **kw)
        self.depth.set_function(self._queue.qsize)
        self.spooled = Gauge("driftloop_prediction_spool_records",
                             "Prediction events in the spool not yet acknowledged by Kafka.",
                             **kw)
        self.spooled.set_function(spool.depth if spool is not None else (lambda: 0))
        if spool is not None:
            try:
                replay = spool.adopt()
                if replay:
                    log.info("prediction events: %d left by a stopped process, resending",
                             replay)
            except Exception as e:
                log.warning("prediction events: cannot read the spool %s: %s", spool.folder, e)
        self._thread = threading.Thread(target=self._run, name="prediction-emitter", daemon=True)
        self._thread.start()

    def offer(self, event: Event, key: str | None = None) -> bool:
        """Spool and queue an event for Kafka; False (and counted) when it was dropped."""
        try:
            record = to_kafka(event, key)
        except Exception as e:
            log.warning("prediction event %s not encodable: %s", event.id, e)
            self.dropped.labels(reason="unencodable").inc()
            return False
        ref: Ref | None = None
        if self._spool is not None:
            try:
                ref = self._spool.append(self._topic, record)
            except Exception as e:
                log.warning("prediction event %s not spooled: %s", event.id, e)
                self.spool_errors.inc()
        try:
            self._queue.put_nowait((self._topic, record, ref))
            return True
        except queue.Full:
            if ref is not None and self._spool is not None:
                self._spool.defer(ref)  # on disk: sent once the sender catches up
                return True
            self.dropped.labels(reason="queue_full").inc()
            return False

    def _connect(self) -> KafkaProducer | None:
        try:
            return self._factory()
        except Exception as e:
            log.warning("prediction events: Kafka unavailable (%s); retrying", e)
            return None

    def _next(self) -> list[_Item] | None:
        """What to send next: the queue first, then the spool's backlog; None to stop."""
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            spool = self._spool
            with self._lock:
                room = MAX_IN_FLIGHT - self._in_flight
            if spool is not None and room > 0 and time.monotonic() >= self._retry_at:
                backlog = spool.backlog(room)
                if backlog:
                    return [(topic, record, ref) for ref, topic, record in backlog]
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                return []
        return None if item is None else [item]

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            items = self._next()
            if items is None:
                break
            if not items:
                continue
            while self._producer is None and not self._stop.is_set():
                self._producer = self._connect()
                if self._producer is None:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
            backoff = 0.5
            for item in items:
                if self._producer is None:
                    if item[2] is None:  # a spooled one waits on disk for the next process
                        self.dropped.labels(reason="stopped").inc()
                    continue
                self._send(self._producer, *item)

    def _send(self, producer: KafkaProducer, topic: str, record: KafkaRecord,
              ref: Ref | None) -> None:
        with self._lock:
            self._in_flight += 1
        try:
            fut = producer.send(topic, key=record.key, value=record.value,
                                headers=record.headers)
            fut.add_callback(lambda _md: self._on_sent(ref))
            fut.add_errback(lambda e: self._on_error(e, ref))
        except Exception as e:
            self._on_error(e, ref)

    def _on_sent(self, ref: Ref | None) -> None:
        with self._lock:
            self._in_flight -= 1
        self.sent.inc()
        if ref is not None and self._spool is not None:
            self._spool.ack(ref)

    def _on_error(self, exc: BaseException, ref: Ref | None) -> None:
        with self._lock:
            self._in_flight -= 1
        log.warning("prediction event not delivered: %s", exc)
        if ref is not None and self._spool is not None:
            self._retry_at = time.monotonic() + RETRY_S
            self._spool.defer(ref)  # still on disk: sent again from the backlog
        else:
            self.dropped.labels(reason="kafka_error").inc()

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (up to ``timeout_s``), then stop; what Kafka has not
        acknowledged by then stays in the spool for the next process."""
        deadline = time.monotonic() + timeout_s

        def busy() -> bool:
            if not self._queue.empty():
                return True
            return self._spool is not None and self._producer is not None \
                and self._spool.has_backlog()

        while busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        if self._producer is not None:
            self._producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            self._producer.close(timeout=1)
        if self._spool is not None:
            self._spool.close()
