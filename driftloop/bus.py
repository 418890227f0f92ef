"""Kafka clients with driftloop's durability defaults (producers: librdkafka or
kafka-python, ``Settings.kafka_producer_client``; consumers and admin: kafka-python).

Producers wait for every in-sync replica (``acks=all``), retry, and are idempotent, so
a record that was acknowledged is durable and a retried send is not written twice.
Consumers start at the earliest offset and commit by hand, after the work is done.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from driftloop import topics as topic_names
from driftloop.errors import Unavailable
from driftloop.events import INPUT, Event, to_kafka

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.producer.future import FutureRecordMetadata

    from driftloop.settings import Settings

DL_REASON = "dl_reason"
DL_SOURCE_TOPIC = "dl_source_topic"
DL_SOURCE_PARTITION = "dl_source_partition"
DL_SOURCE_OFFSET = "dl_source_offset"


def _servers(settings: Settings) -> list[str]:
    return settings.kafka_bootstrap_servers


SASL_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def _check_security(settings: Settings) -> str:
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_") and not settings.kafka_username:
        raise ValueError(f"DRIFTLOOP_KAFKA_USERNAME is required with {protocol}")
    return protocol


def security_config(settings: Settings) -> dict[str, Any]:
    """kafka-python's security options from the settings (protocol, CA, SASL user)."""
    protocol = _check_security(settings)
    config: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        config["ssl_check_hostname"] = True
        if settings.kafka_ca_file:
            config["ssl_cafile"] = str(settings.kafka_ca_file)
    if protocol.startswith("SASL_"):
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_username
        config["sasl_plain_password"] = settings.kafka_password.get_secret_value()
    return config


def client_config(settings: Settings, name: str) -> dict[str, Any]:
    """What every Kafka client of driftloop is built from: the bootstrap servers, a client
    id, and the security options. Every KafkaProducer/KafkaConsumer/KafkaAdminClient in
    driftloop takes these, so a secured cluster secures all of them."""
    return {
        "bootstrap_servers": _servers(settings),
        "client_id": f"{settings.kafka_client_id}-{name}",
        **security_config(settings),
    }


def java_properties(settings: Settings, *, shaded_prefix: str = "") -> dict[str, str]:
    """The same security options as Java client properties (the Flink Kafka connector).

    ``shaded_prefix`` is prepended to the JAAS login module's class name for connectors
    that relocate the Kafka client (``flink-sql-connector-kafka``)."""
    protocol = _check_security(settings)
    props = {"security.protocol": protocol}
    if protocol in ("SSL", "SASL_SSL") and settings.kafka_ca_file:
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = str(settings.kafka_ca_file)
    if protocol.startswith("SASL_"):
        module = shaded_prefix + SASL_LOGIN_MODULES[settings.kafka_sasl_mechanism]

        def quoted(v: str) -> str:
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

        props["sasl.mechanism"] = settings.kafka_sasl_mechanism
        props["sasl.jaas.config"] = (
            f"{module} required username={quoted(settings.kafka_username)} "
            f"password={quoted(settings.kafka_password.get_secret_value())};"
        )
    return props


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A producer whose acknowledged records are durable (acks=all, idempotent, retried).

    The client is ``settings.kafka_producer_client``: librdkafka (``confluent-kafka``,
    ``driftloop.rdkafka``) or kafka-python; both take the options below in kafka-python's
    names and answer through the same interface (``send(...).get``, ``flush``, ``close``,
    ``kafka.errors`` exceptions). The librdkafka path does not import the ``kafka``
    package until an error (a cold start pays for one client, not two)."""
    config = producer_config(settings, **overrides)
    try:
        if settings.kafka_producer_client == "confluent-kafka":
            from driftloop.rdkafka import RdKafkaProducer

            return cast("KafkaProducer", RdKafkaProducer(config))
        from kafka import KafkaProducer

        return KafkaProducer(**config)
    except Exception as e:
        if is_kafka_error(e):
            raise Unavailable(f"Kafka at {settings.kafka_bootstrap} unavailable: {e}") from e
        raise


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """The options of every driftloop producer (kafka-python's names; ``make_producer``
    builds either client from them): acks=all, idempotent, retried until the delivery
    timeout."""
    config: dict[str, Any] = {
        **client_config(settings, "producer"),
        "acks": "all",
        "retries": 2_147_483_647,
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,
        "linger_ms": 5,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 30_000,
        "max_block_ms": 10_000,
        "bootstrap_timeout_ms": 10_000,
        "reconnect_backoff_max_ms": 2_000,
        "compression_type": None,
        "max_request_size": settings.kafka_max_message_bytes,
    }
    config.update(overrides)
    return config


def is_kafka_error(e: BaseException) -> bool:
    """Whether ``e`` is a Kafka client error (``kafka.errors.KafkaError``, what either
    producer client raises). Imports ``kafka.errors`` only when asked, i.e. after an
    error: the librdkafka path never loads kafka-python otherwise."""
    from kafka.errors import KafkaError

    return isinstance(e, KafkaError)


def is_record_too_large(e: BaseException) -> bool:
    """Whether ``e`` refuses one record for its size (``MessageSizeTooLargeError``)."""
    from kafka.errors import MessageSizeTooLargeError

    return isinstance(e, MessageSizeTooLargeError)


def send_event(
    producer: KafkaProducer, topic: str, event: Event, key: str | None = None
) -> FutureRecordMetadata:
    """Send one event in binary mode; the future resolves once Kafka acknowledged it."""
    record = to_kafka(event, key)
    return producer.send(topic, key=record.key, value=record.value, headers=record.headers)


def publish(
    producer: KafkaProducer,
    topic: str,
    events: Iterable[Event],
    *,
    key: str | None = None,
    timeout_s: float = 30.0,
) -> int:
    """Send events and wait for every acknowledgement; raise ``Unavailable`` on failure."""
    futures = [
        send_event(producer, topic, e, key if key is not None else _default_key(e)) for e in events
    ]
    try:
        producer.flush(timeout=timeout_s)
        for f in futures:
            f.get(timeout=timeout_s)
    except Exception as e:
        if is_kafka_error(e):
            raise Unavailable(f"Kafka did not acknowledge records to {topic}: {e}") from e
        raise
    return len(futures)


def input_key(event: Event) -> str:
    """Kafka key of a raw input (``driftloop.raw.<modality>``): a digest of its identity
    (source, id), not its model. Preprocessing is per record, so one model's inputs need no
    order: keyed by model they would all land in one partition and a preprocess job's
    parallelism would leave every subtask but one idle; keyed by identity they spread over
    the partitions, and a resent input lands where its first copy did."""
    import hashlib

    s, i = event.source.encode("utf-8", "surrogatepass"), event.id.encode("utf-8", "surrogatepass")
    h = hashlib.blake2b(digest_size=12)
    h.update(len(s).to_bytes(4, "big"))
    h.update(s)
    h.update(i)
    return h.hexdigest()


def _default_key(event: Event) -> str | None:
    """Kafka key = model name (per-model ordering), when the payload names one; a raw
    input's is its identity (``input_key``)."""
    if event.type == INPUT:
        return input_key(event)
    data = event.data
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, str):
        return model
    return event.extensions.get("model") or event.extensions.get("partitionkey")


def make_consumer(
    settings: Settings, topics: Sequence[str], group_id: str, **overrides: Any
) -> KafkaConsumer:
    """A consumer in ``group_id`` that starts at the earliest offset and commits by hand."""
    from kafka import KafkaConsumer

    config: dict[str, Any] = {
        **client_config(settings, group_id),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_poll_records": 500,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        "reconnect_backoff_max_ms": 2_000,
    }
    config.update(overrides)
    consumer = KafkaConsumer(**config)
    if topics:
        consumer.subscribe(list(topics))
    return consumer


TOPIC_FRAMING_BYTES = 64 * 1024
"""Topics take this much more than producers may send: batch and request framing."""


def topic_replication(settings: Settings) -> tuple[int, int]:
    """``(replication factor, min.insync.replicas)`` of the topics driftloop creates: (3, 2)
    on the three brokers of the 'ha' topology (an acknowledged record is on two brokers at
    least, and one broker may fail), (1, 1) on the single broker of the light one."""
    return (3, 2) if settings.topology == "ha" else (1, 1)


def topic_configs(settings: Settings) -> dict[str, str]:
    """Per-topic configuration of the topics driftloop creates: the agreed record limit, the
    replicas an acks=all write needs, and no unclean leader election (a replica that is not
    in sync never becomes leader: acknowledged records are not lost to it)."""
    return {
        "max.message.bytes": str(settings.kafka_max_message_bytes + TOPIC_FRAMING_BYTES),
        "min.insync.replicas": str(topic_replication(settings)[1]),
        "unclean.leader.election.enable": "false",
    }


def ensure_topics(
    settings: Settings, topics: Sequence[str] | None = None, partitions: int | None = None
) -> list[str]:
    """Create the topics that do not exist yet; return the ones created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = list(topics) if topics is not None else topic_names.all_topics()
    admin = KafkaAdminClient(**client_config(settings, "admin"), request_timeout_ms=15_000)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            n = partitions or settings.topic_partitions
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            t,
                            num_partitions=n,
                            replication_factor=topic_replication(settings)[0],
                            topic_configs=topic_configs(settings),
                        )
                        for t in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        admin.close()


DL_VALUE_BYTES = "dl_value_bytes"
"""Size of the original value when the dead letter carries only its head (truncated)."""
DL_VALUE_SHA256 = "dl_value_sha256"
DL_TRUNCATED_HEADERS = "dl_truncated_headers"
DL_OWN = frozenset(
    {
        DL_REASON,
        DL_SOURCE_TOPIC,
        DL_SOURCE_PARTITION,
        DL_SOURCE_OFFSET,
        DL_VALUE_BYTES,
        DL_VALUE_SHA256,
        DL_TRUNCATED_HEADERS,
    }
)
"""The headers ``dead_letter`` writes; others (``dl_sink``…) are kept as they come."""
DEAD_LETTER_MAX_VALUE_BYTES = 256 * 1024
DEAD_LETTER_MAX_HEADER_BYTES = 8 * 1024
DEAD_LETTER_MAX_HEADERS_TOTAL = 128 * 1024
"""Bounds that keep a dead letter far below the producer's 1 MiB ``max_request_size``."""


def dead_letter(
    producer: KafkaProducer,
    *,
    reason: str,
    source_topic: str,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None = None,
    key: bytes | None = None,
    partition: int | None = None,
    offset: int | None = None,
    max_value_bytes: int = DEAD_LETTER_MAX_VALUE_BYTES,
    topic: str = topic_names.DEADLETTER,
) -> FutureRecordMetadata:
    """Park a record that cannot be processed on the dead-letter topic, with the reason.

    A dead letter cannot fail on size: a value over ``max_value_bytes`` is cut to its head
    (``dl_value_bytes`` and ``dl_value_sha256`` name the original, the source topic,
    partition and offset point at it), oversized header values are cut likewise.
    """
    import hashlib

    h: list[tuple[str, bytes]] = []
    cut: list[str] = []
    total = 0
    for k, v in headers or []:
        if k in DL_OWN:
            continue
        v = v or b""
        if len(v) > DEAD_LETTER_MAX_HEADER_BYTES or total + len(v) > DEAD_LETTER_MAX_HEADERS_TOTAL:
            room = max(0, DEAD_LETTER_MAX_HEADERS_TOTAL - total)
            v = v[: min(DEAD_LETTER_MAX_HEADER_BYTES, room)]
            cut.append(k[:200])
        total += len(k) + len(v)
        h.append((k, v))
    h.append((DL_REASON, reason.encode()[:4096]))
    h.append((DL_SOURCE_TOPIC, source_topic.encode()[:1024]))
    if partition is not None:
        h.append((DL_SOURCE_PARTITION, str(partition).encode()))
    if offset is not None:
        h.append((DL_SOURCE_OFFSET, str(offset).encode()))
    if value is not None and len(value) > max_value_bytes:
        h.append((DL_VALUE_BYTES, str(len(value)).encode()))
        h.append((DL_VALUE_SHA256, hashlib.sha256(value).hexdigest().encode()))
        value = value[:max_value_bytes]
    if cut:
        h.append((DL_TRUNCATED_HEADERS, ",".join(cut).encode()[:4096]))
    if key is not None and len(key) > DEAD_LETTER_MAX_HEADER_BYTES:
        key = key[:DEAD_LETTER_MAX_HEADER_BYTES]
    return producer.send(topic, key=key, value=value, headers=h)
