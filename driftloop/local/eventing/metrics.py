"""The dispatcher's own Prometheus metrics, per route, in a registry of its own (served on
``DISPATCHER_METRICS_PORT``; ``DriftloopDispatcherRouteFailing`` watches ``route_up``)."""

from __future__ import annotations

__all__ = ["DispatcherMetrics"]


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
