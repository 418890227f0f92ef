"""Prediction events to Kafka, off the inference path.

``offer`` never blocks and never raises: it puts the event on a bounded queue and
returns. One background thread drains the queue into a Kafka producer. When the queue
is full (Kafka slow or down) the event is dropped and counted, so inference latency and
availability never depend on Kafka.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from driftloop import topics
from driftloop.bus import send_event

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from prometheus_client import CollectorRegistry

    from driftloop.events import Event

log = logging.getLogger(__name__)


class PredictionEmitter:
    """A bounded queue and one sender thread; counts sent, dropped and failed events."""

    def __init__(
        self,
        producer_factory: Callable[[], KafkaProducer],
        *,
        maxsize: int = 10_000,
        topic: str = topics.PREDICTIONS,
        registry: CollectorRegistry | None = None,
    ) -> None:
        from prometheus_client import Counter, Gauge

        self._factory = producer_factory
        self._queue: queue.Queue[tuple[Event, str | None] | None] = queue.Queue(maxsize)
        self._topic = topic
        self._producer: KafkaProducer | None = None
        self._stop = threading.Event()
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
        self.sent = Counter("driftloop_prediction_events_sent",
                            "Prediction events Kafka acknowledged.", **kw)
        self.dropped = Counter("driftloop_prediction_events_dropped",
                               "Prediction events dropped, by reason.", ["reason"], **kw)
        self.depth = Gauge("driftloop_prediction_events_queued",
                           "Prediction events waiting for Kafka.", **kw)
        self.depth.set_function(self._queue.qsize)
        self._thread = threading.Thread(target=self._run, name="prediction-emitter", daemon=True)
        self._thread.start()

    def offer(self, event: Event, key: str | None = None) -> bool:
        """Queue an event for Kafka; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((event, key))
            return True
        except queue.Full:
            self.dropped.labels(reason="queue_full").inc()
            return False

    def _connect(self) -> KafkaProducer | None:
        try:
            return self._factory()
        except Exception as e:
            log.warning("prediction events: Kafka unavailable (%s); retrying", e)
            return None

    def _on_error(self, exc: BaseException) -> None:
        log.warning("prediction event not delivered: %s", exc)
        self.dropped.labels(reason="kafka_error").inc()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None:
                break
            while self._producer is None and not self._stop.is_set():
                self._producer = self._connect()
                if self._producer is None:
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
            backoff = 0.5
            if self._producer is None:
                self.dropped.labels(reason="stopped").inc()
                continue
            event, key = item
            try:
                fut = send_event(self._producer, self._topic, event, key)
                fut.add_callback(lambda _md: self.sent.inc())
                fut.add_errback(self._on_error)
            except Exception as e:
                self._on_error(e)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (up to ``timeout_s``), then stop."""
        deadline = time.monotonic() + timeout_s
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=max(0.1, deadline - time.monotonic()))
        if self._producer is not None:
            self._producer.flush(timeout=max(0.1, deadline - time.monotonic()))
            self._producer.close(timeout=1)
