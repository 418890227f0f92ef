"""``/metrics`` of the streaming predictor (driftloop.serving.stream): throughput and queue depth.

Read from the predictor's own counters at scrape time, so the hot loop only bumps integers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class StreamState(Protocol):
    processed: int
    dead_lettered: int
    queue_depth: int


class StreamCollector(Collector):
    def __init__(self, state: StreamState) -> None:
        self.state = state

    def collect(self) -> Iterable[Any]:
        records = CounterMetricFamily(
            "driftloop_serving_stream_records", "Input records handled, by outcome.",
            labels=["outcome"])
        records.add_metric(["predicted"], self.state.processed)
        records.add_metric(["dead_lettered"], self.state.dead_lettered)
        yield records
        yield GaugeMetricFamily(
            "driftloop_serving_stream_queue_depth",
            "Input records in Kafka not yet read by this predictor (end offset - position).",
            value=self.state.queue_depth)


def queue_depth(consumer: Any) -> int:
    """Records behind the consumer's position on its assigned partitions (its thread only)."""
    parts = list(consumer.assignment())
    if not parts:
        return 0
    ends = consumer.end_offsets(parts)
    return sum(max(0, ends[tp] - consumer.position(tp)) for tp in parts)


def serve(state: StreamState, port: int, *, registry: CollectorRegistry | None = None,
          ) -> None:
    """``/metrics`` on loopback: ``state``'s figures plus what ``registry`` holds."""
    registry = registry if registry is not None else CollectorRegistry()
    registry.register(StreamCollector(state))
    start_http_server(port, addr="127.0.0.1", registry=registry)
