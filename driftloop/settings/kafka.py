"""Kafka: where the brokers are, how every client connects, and the topics' shape."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr

from driftloop.settings.fields import Secret

__all__ = ["KafkaSettings"]


class KafkaSettings(BaseModel):
    """Kafka clients (the producers, consumers and admin of driftloop and the Flink jobs)."""

    kafka_bootstrap: str = Field(
        "127.0.0.1:9092",
        description="Kafka bootstrap servers, comma separated. Kept in this form (Kafka's, "
        "which Flink's connector and the Kafka tools take as it is); "
        "``kafka_bootstrap_servers`` has the parsed list.",
    )
    kafka_client_id: str = Field("driftloop", description="Client id prefix for Kafka clients.")
    kafka_max_message_bytes: int = Field(
        2 * 1024 * 1024,
        ge=64 * 1024,
        description="The record size every driftloop producer may send (max_request_size, also "
        "the Flink sinks'); topics are created with max.message.bytes this plus 64 KiB of "
        "framing. Bigger records are dead-lettered (with their reason) or carried by reference.",
    )
    raw_input_dataref_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="Raw inputs (send_input) above this size are written to the blob store and "
        "travel as a CloudEvents dataref (claim check; Flink preprocess reads them there); "
        "0 sends every input inline.",
    )
    topic_partitions: int = Field(3, ge=1, description="Partitions for topics the stack creates.")
    kafka_producer_client: Literal["confluent-kafka", "kafka-python"] = Field(
        "confluent-kafka",
        description="The client every driftloop producer uses: librdkafka (confluent-kafka, "
        "encodes and sends outside the GIL) or the pure-Python kafka-python. Both are "
        "acks=all and idempotent behind one interface (``driftloop.bus.make_producer``).",
    )

    # --- security ---
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How every Kafka client connects: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512",
        description="SASL mechanism of the SASL_* protocols (Strimzi's KafkaUser: SCRAM-SHA-512).",
    )
    kafka_username: str = Field("", description="SASL user name of the Kafka clients.")
    kafka_password: Secret = Field(
        SecretStr(""), description="SASL password of the Kafka clients (a secret)."
    )
    kafka_ca_file: Path | None = Field(
        None,
        description="PEM file of the CA that signed the brokers' certificates "
        "(SSL/SASL_SSL); empty uses the system's trust store.",
    )

    @property
    def kafka_bootstrap_servers(self) -> list[str]:
        """The bootstrap servers as a list (what kafka-python's clients take)."""
        return [s.strip() for s in self.kafka_bootstrap.split(",") if s.strip()]
