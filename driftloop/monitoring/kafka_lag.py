"""Consumer-group lag of every Kafka group, served on ``/metrics`` (``python -m``).

The same series as kafka_exporter, which Strimzi's ``kafkaExporter`` runs in a cluster
(``kafka_consumergroup_lag{consumergroup, topic, partition}``), so the lag alert and panels
read the same names locally and in a cluster. Lag is measured when Prometheus scrapes:
end offset minus committed offset of each partition a group has committed to.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from driftloop import bus
from driftloop.settings import Settings

log = logging.getLogger("driftloop.kafka_lag")


def lag_rows(committed: dict[tuple[str, int], int], ends: dict[tuple[str, int], int]
             ) -> list[tuple[str, int, int]]:
    """(topic, partition, lag) for each committed partition; never negative."""
    return [(t, p, max(0, ends.get((t, p), off) - off))
            for (t, p), off in sorted(committed.items())]


class LagCollector(Collector):
    """Reads every group's committed offsets and the partitions' end offsets on collect."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._admin: Any = None
        self._consumer: Any = None

    def _clients(self) -> tuple[Any, Any]:
        from kafka import KafkaAdminClient, KafkaConsumer

        if self._admin is None:
            self._admin = KafkaAdminClient(**bus.client_config(self.settings, "lag-admin"))
            self._consumer = KafkaConsumer(**bus.client_config(self.settings, "lag-offsets"))
        return self._admin, self._consumer

    def collect(self) -> Iterable[GaugeMetricFamily]:
        lag = GaugeMetricFamily("kafka_consumergroup_lag", "Records a group has not committed yet.",
                                labels=["consumergroup", "topic", "partition"])
        up = GaugeMetricFamily("driftloop_kafka_lag_up", "1 when the last lag reading worked.")
        try:
            with self._lock:
                for group, rows in self.read().items():
                    for topic, partition, n in rows:
                        lag.add_metric([group, topic, str(partition)], n)
            up.add_metric([], 1)
        except Exception as e:  # Kafka down: the reading says so, the exporter stays up
            log.warning("reading consumer-group lag failed: %s", e)
            self._admin = self._consumer = None
            up.add_metric([], 0)
        yield lag
        yield up

    def read(self) -> dict[str, list[tuple[str, int, int]]]:
        from kafka import TopicPartition

        admin, consumer = self._clients()
        out = {}
        for group, *_ in admin.list_consumer_groups():
            offsets = admin.list_consumer_group_offsets(group)
            committed = {(tp.topic, tp.partition): m.offset for tp, m in offsets.items()
                         if m.offset >= 0}
            if not committed:
                continue
            ends = consumer.end_offsets([TopicPartition(t, p) for t, p in committed])
            out[group] = lag_rows(committed, {(tp.topic, tp.partition): n
                                              for tp, n in ends.items()})
        return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    registry = CollectorRegistry()
    registry.register(LagCollector(settings))
    start_http_server(settings.kafka_lag_port, addr="127.0.0.1", registry=registry)
    log.info("kafka lag on 127.0.0.1:%d/metrics", settings.kafka_lag_port)
    threading.Event().wait()


if __name__ == "__main__":
    main()
