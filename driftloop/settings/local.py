"""The local stack (``driftloop up``): which components, their ports, and the dispatcher that
stands in for Knative Eventing."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from driftloop.settings.fields import PROJECT_ROOT, CommaList

__all__ = ["DispatcherSettings", "LocalStackSettings"]


class LocalStackSettings(BaseModel):
    """Components ``driftloop up`` starts and the ports they listen on. (MLServer's, Flink's
    and the monitoring servers' ports sit with their groups, beside the URLs they resolve.)"""

    components: CommaList = Field(
        (),
        description="Comma-separated names of the local-stack components to start; "
        "empty starts every component that is set up.",
    )
    intake_port: int = Field(8080, description="Port of feedback-intake in the local stack.")
    drift_check_port: int = Field(8082, description="Port of drift-check in the local stack.")
    retrain_port: int = Field(
        8083, description="Port of retrain-trigger in the local stack (alert_webhook_url's)."
    )
    promote_port: int = Field(8084, description="Port of promote in the local stack.")
    topology: Literal["light", "ha"] = Field(
        "light",
        description="Shape of the local stack. 'light': one Kafka broker (topics with "
        "replication factor 1) and flink_taskmanagers TaskManagers. 'ha': three KRaft "
        "brokers (kafka-1..3, each broker and controller, a quorum of three; topics with "
        "replication factor 3, min.insync.replicas 2, no unclean leader election) and at "
        "least two TaskManagers, so one broker or one TaskManager can fail, and JobManager "
        "high availability (ZooKeeper, a standby JobManager), so the job survives its "
        "JobManager without being submitted again.",
    )
    kafka_port: int = Field(
        9092, description="Broker port of the local Kafka (broker 1 of the 'ha' topology)."
    )
    kafka_controller_port: int = Field(
        9093, description="Controller port of the local Kafka (broker 1 of the 'ha' topology)."
    )
    kafka_heap: str = Field("768m", description="JVM heap of each local Kafka broker.")
    kafka_metrics_port: int = Field(
        9404,
        description="Port of the JMX exporter agent inside the local Kafka broker (broker 1 "
        "of the 'ha' topology).",
    )
    kafka_2_port: int = Field(9192, description="Broker port of broker 2 ('ha' topology).")
    kafka_2_controller_port: int = Field(
        9193, description="Controller port of broker 2 ('ha' topology)."
    )
    kafka_2_metrics_port: int = Field(
        9405, description="JMX exporter port of broker 2 ('ha' topology)."
    )
    kafka_3_port: int = Field(9292, description="Broker port of broker 3 ('ha' topology).")
    kafka_3_controller_port: int = Field(
        9293, description="Controller port of broker 3 ('ha' topology)."
    )
    kafka_3_metrics_port: int = Field(
        9406, description="JMX exporter port of broker 3 ('ha' topology)."
    )
    kafka_lag_port: int = Field(
        9308, description="Port of the local consumer-group lag exporter (kafka-lag)."
    )
    node_exporter_port: int = Field(
        9100, description="Port of the local node-exporter (host CPU, memory, disk, network)."
    )


class DispatcherSettings(BaseModel):
    """The local dispatcher: Knative Eventing's sources and triggers, run from its manifests."""

    eventing_dir: Path = Field(
        PROJECT_ROOT / "eventing",
        description="Knative Eventing manifests the local dispatcher reads (sources, triggers).",
    )
    dispatcher_poll_ms: int = Field(
        200, ge=10, description="Longest wait of one Kafka poll in the local dispatcher."
    )
    dispatcher_timeout_s: float = Field(
        30.0, gt=0, description="HTTP timeout per delivery when a source sets no delivery.timeout."
    )
    dispatcher_kafka_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest Kafka may take to acknowledge one reply or dead letter of the "
        "local dispatcher (its producer's delivery timeout); a try that times out is retried, "
        "the route reported failing meanwhile.",
    )
    dispatcher_metrics_port: int = Field(
        8093,
        ge=0,
        le=65535,
        description="Prometheus /metrics port of the local dispatcher (0: not served).",
    )
    dead_letter_max_value_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=768 * 1024,
        description="Largest value a dead letter carries; a longer one keeps its head, its size, "
        "its sha256 and its source topic/partition/offset.",
    )
