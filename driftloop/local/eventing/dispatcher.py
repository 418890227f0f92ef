"""The local dispatcher: a set of route consumers and one ping worker, sized by the
routes' autoscaling annotations, until ``stop()``.

A sink ``ref`` to a Knative Service named X is delivered to the local component named X;
a route whose sink has no local endpoint is skipped (its records wait in Kafka).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from driftloop.local.eventing.manifests import Eventing, Route, invalid_record_owners
from driftloop.local.eventing.metrics import DispatcherMetrics
from driftloop.local.eventing.pings import PingWorker
from driftloop.local.eventing.worker import RouteWorker
from driftloop.local.scaling import Scaler, measure_lag

if TYPE_CHECKING:
    from kafka import KafkaProducer

    from driftloop.settings import Settings

__all__ = ["Dispatcher"]

log = logging.getLogger("driftloop.dispatcher")


class Dispatcher:
    """Runs a worker per route and one for the pings until ``stop()``."""

    def __init__(
        self, eventing: Eventing, endpoints: Mapping[str, str], settings: Settings
    ) -> None:
        self.eventing, self.endpoints, self.settings = eventing, dict(endpoints), settings
        self.stop_event = threading.Event()
        self.routes: list[RouteWorker] = []
        self.pings: PingWorker | None = None
        self.skipped: list[str] = []
        self.metrics = DispatcherMetrics()
        self._producer: KafkaProducer | None = None
        self._generations: dict[str, threading.Event] = {}
        """Route name → the stop event of its current set of consumers."""
        self._scale_lock = threading.Lock()
        self.scaler: Scaler | None = None
        self._probes: list[Any] = []

    def plan(self) -> dict[str, Any]:
        """What will be dispatched where (and what has no local endpoint)."""
        return {
            "routes": [
                {
                    "name": r.name,
                    "topics": list(r.topics),
                    "group": r.group,
                    "sink": r.sink,
                    "url": self.endpoints.get(r.sink),
                    "filter": dict(r.filter),
                    "consumers": self.consumers(r.name),
                }
                for r in self.eventing.routes
            ],
            "pings": [
                {
                    "name": p.name,
                    "schedule": p.schedule,
                    "sink": p.sink,
                    "url": self.endpoints.get(p.sink),
                }
                for p in self.eventing.pings
            ],
        }

    def start(self) -> None:
        from driftloop import bus

        # Replies and dead letters fail after the dispatcher's own Kafka timeout, so that a
        # route reports a missing dead-letter topic (and retries) within it.
        self._producer = bus.make_producer(
            self.settings, delivery_timeout_ms=int(self.settings.dispatcher_kafka_timeout_s * 1000)
        )
        routes = []
        for r in self.eventing.routes:
            if r.sink not in self.endpoints:
                self.skipped.append(r.name)
                log.warning(
                    "route %s: no local endpoint for %s; its records wait in Kafka", r.name, r.sink
                )
                continue
            routes.append(r)
        owners = invalid_record_owners(routes)
        routes = [replace(r, dead_letters_invalid=r.name in owners) for r in routes]
        for r in routes:
            self._run_consumers(r, 1)
        scaled = [r for r in routes if r.scaling.enabled]
        if scaled:
            self.scaler = Scaler(
                [(r.name, r.scaling, self._lag_probe(r), self._rescaler(r)) for r in scaled],
                self.stop_event,
                self.consumers,
            )
            self.scaler.start()
        pings = [
            (p, self.endpoints[p.sink]) for p in self.eventing.pings if p.sink in self.endpoints
        ]
        self.skipped += [p.name for p in self.eventing.pings if p.sink not in self.endpoints]
        if pings:
            self.pings = PingWorker(pings, self.stop_event, self.settings)
            self.pings.start()

    def consumers(self, route: str) -> int:
        return sum(1 for w in self.routes if w.route.name == route and not w.stop.is_set())

    def _run_consumers(self, r: Route, count: int) -> None:
        """Replace the route's consumers by ``count`` new ones, each with its share of the
        partitions. The old ones stop first (a record in flight is not committed and is
        delivered again by its new owner: at least once, order per partition kept)."""
        with self._scale_lock:
            if self.stop_event.is_set():
                return
            old_stop = self._generations.get(r.name)
            old = [w for w in self.routes if w.route.name == r.name]
            if old_stop is not None:
                old_stop.set()
                for w in old:
                    w.join(30)
            stop = threading.Event()
            self._generations[r.name] = stop
            producer = self._producer
            assert producer is not None, "consumers run between start() and stop()"
            fresh = [
                RouteWorker(
                    r,
                    self.endpoints[r.sink],
                    self.settings,
                    producer,
                    self.eventing.dead_letter_topics,
                    stop,
                    self.metrics,
                    share=(i, count),
                )
                for i in range(count)
            ]
            for w in fresh:
                w.start()
            self.routes = [w for w in self.routes if w.route.name != r.name] + fresh

    def _rescaler(self, r: Route) -> Callable[[int], None]:
        return lambda count: self._run_consumers(r, count)

    def _lag_probe(self, r: Route) -> Callable[[], tuple[int, int]]:
        """(records the route's group is behind, partitions of its topics)."""
        from kafka.structs import TopicPartition

        from driftloop import bus

        probe: list[Any] = []

        def measure() -> tuple[int, int]:
            if not probe:
                probe.append(bus.make_consumer(self.settings, [], r.group))
                self._probes.append(probe[0])
            consumer = probe[0]
            tps = [
                TopicPartition(t, p)
                for t in r.topics
                for p in sorted(consumer.partitions_for_topic(t) or ())
            ]
            return (measure_lag(consumer, tps, r.initial_offset) if tps else 0), len(tps)

        return measure

    def stop(self, timeout_s: float = 15.0) -> None:
        self.stop_event.set()
        with self._scale_lock:
            for ev in self._generations.values():
                ev.set()
        if self.scaler is not None:
            self.scaler.join(timeout_s)
        for probe in self._probes:
            probe.close(autocommit=False)
        for w in [*self.routes, *([self.pings] if self.pings else [])]:
            w.join(timeout_s)
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._producer = None

    def failed(self) -> list[str]:
        """Routes that fail right now (retrying) or whose worker ended: the dispatcher is
        unhealthy while this is not empty, and says why."""
        return [
            f"{w.route.name}: {w.last_error or w.error or 'worker ended'}"
            for w in self.routes
            if w.failing or (not w.is_alive() and not w.stop.is_set())
        ]

    def states(self) -> list[dict[str, Any]]:
        """One entry per route, summed over its consumers."""
        out: dict[str, dict[str, Any]] = {}
        for w in list(self.routes):
            st = w.state()
            agg = out.setdefault(st["name"], {**st, "consumers": 0})
            if agg is not st and agg["consumers"]:
                for k in ("delivered", "dead_lettered", "dead_letters_truncated", "errors"):
                    agg[k] += st[k]
                agg["failing"] = agg["failing"] or st["failing"]
                agg["last_error"] = agg["last_error"] or st["last_error"]
            agg["consumers"] += 1
        return list(out.values())
