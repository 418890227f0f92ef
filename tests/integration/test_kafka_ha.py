"""The 'ha' topology's Kafka: three KRaft brokers started by ``driftloop up --topology ha``
itself (with feedback-intake), on free ports, once for this module.

What the delivery guarantees rest on is read back from the running brokers, not assumed:
every topic has three replicas, an acks=all write needs two in sync
(``min.insync.replicas``), a replica out of sync never becomes leader, and the controller
quorum spans the three nodes; driftloop's producers wait for every in-sync replica and are
idempotent, its consumers read committed records only. Then the behaviour: with two brokers
SIGKILLed a publish is refused (``Unavailable``) instead of acknowledged; with the
partition's leader SIGKILLed while records flow, every publish is acknowledged and a
read_committed consumer finds each acknowledged record exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from driftloop import bus, topics
from driftloop import events as ev
from driftloop.errors import Unavailable
from driftloop.local import kafka_cluster
from driftloop.local.process import free_port
from driftloop.rdkafka import rdkafka_config
from driftloop.settings import Settings

pytestmark = pytest.mark.integration


CLI = str(Path(sys.executable).parent / "driftloop")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def ha_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``driftloop up --topology ha`` of Kafka (kafka-1..3) and feedback-intake, on free
    ports; the environment of the CLI (no topology in it: the flag sets it)."""
    state: Path = tmp_path_factory.mktemp("kafka-ha")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLOOP_")}
    env.update({f"DRIFTLOOP_{n.upper()}": str(free_port()) for n in Settings.model_fields
                if n.startswith("kafka") and n.endswith("_port")})
    env.update({"DRIFTLOOP_STATE_DIR": str(state), "DRIFTLOOP_INTAKE_PORT": str(free_port()),
                "DRIFTLOOP_COMPONENTS": "kafka,feedback-intake", "DRIFTLOOP_KAFKA_HEAP": "384m"})
    up = run_cli("up", "--topology", "ha", env=env)
    try:
        assert up.returncode == 0, up.stderr
        yield env
    finally:
        run_cli("down", env=env)


@pytest.fixture(scope="module")
def kafka_ha(ha_env: dict[str, str]) -> Settings:
    """The running stack's settings; its bootstrap servers are the three brokers."""
    return kafka_cluster.cluster_settings(Settings.from_env(ha_env))


@pytest.fixture
def cluster(kafka_ha: Settings) -> Settings:
    """The cluster, healed before the test: every broker an earlier test killed started
    again and the feedback topic's replicas back in sync (the last test's kills are left to
    ``down``)."""
    for broker in kafka_cluster.brokers(kafka_ha):
        if broker.pid is None:
            kafka_cluster.restart_broker(kafka_ha, broker.node_id)
    kafka_cluster.wait_isr(kafka_ha, topics.FEEDBACK)
    return kafka_ha


def feedback(src: str, i: int) -> ev.Event:
    return ev.new_event(ev.FEEDBACK, src,
                        {"prediction_id": f"p{i}", "model": "digits", "truth": i % 10},
                        id=f"{src}-{i}", datacontenttype=ev.JSON)


def test_status_lists_every_broker_and_clients_bootstrap_from_all(
    ha_env: dict[str, str], kafka_ha: Settings
):
    status = run_cli("status", "--json", env=ha_env)
    assert status.returncode == 0, status.stderr
    comps = {c["name"]: c for c in json.loads(status.stdout)["components"]}
    assert list(comps) == ["kafka-1", "kafka-2", "kafka-3", "feedback-intake"]
    assert all(c["healthy"] for c in comps.values())
    brokers = [f"127.0.0.1:{ha_env[f'DRIFTLOOP_{p}']}"
               for p in ("KAFKA_PORT", "KAFKA_2_PORT", "KAFKA_3_PORT")]
    assert [comps[f"kafka-{n}"]["endpoint"] for n in (1, 2, 3)] == brokers
    assert kafka_ha.kafka_bootstrap_servers == brokers
    environ = Path(f"/proc/{comps['feedback-intake']['pid']}/environ").read_bytes()
    assert f"DRIFTLOOP_KAFKA_BOOTSTRAP={','.join(brokers)}".encode() in environ.split(b"\0")


def test_running_brokers_hold_the_settings_the_guarantees_rest_on(kafka_ha: Settings):
    admin = KafkaAdminClient(**bus.client_config(kafka_ha, "test-ha-admin"))
    try:
        wanted = topics.all_topics()
        replicas = {t["name"]: {len(p["replica_nodes"]) for p in t["partitions"]}
                    for t in admin.describe_topics(wanted)}
        topic_configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in wanted], config_filter="all"
        )["topic"]
    finally:
        admin.close()
    brokers = kafka_cluster.brokers(kafka_ha)
    broker_configs = {}
    for b in brokers:  # each broker asked for its own configuration
        own = KafkaAdminClient(**{**bus.client_config(kafka_ha, "test-ha-admin"),
                                  "bootstrap_servers": [b.bootstrap]})
        try:
            broker_configs.update(own.describe_configs(
                [ConfigResource(ConfigResourceType.BROKER, str(b.node_id))], config_filter="all"
            )["broker"])
        finally:
            own.close()

    assert replicas == {t: {3} for t in wanted}
    for topic in wanted:
        config = {k: v["value"] for k, v in topic_configs[topic].items()}
        assert (topic, config["min.insync.replicas"],
                config["unclean.leader.election.enable"]) == (topic, "2", "false")
    quorum = ",".join(f"{b.node_id}@{b.host}:{b.controller_port}" for b in brokers)
    for b in brokers:
        config = {k: v["value"] for k, v in broker_configs[str(b.node_id)].items()}
        assert {k: config[k] for k in (
            "process.roles", "controller.quorum.voters", "min.insync.replicas",
            "unclean.leader.election.enable", "default.replication.factor",
            "offsets.topic.replication.factor", "transaction.state.log.replication.factor",
            "transaction.state.log.min.isr",
        )} == {
            "process.roles": "broker,controller", "controller.quorum.voters": quorum,
            "min.insync.replicas": "2", "unclean.leader.election.enable": "false",
            "default.replication.factor": "3", "offsets.topic.replication.factor": "3",
            "transaction.state.log.replication.factor": "3",
            "transaction.state.log.min.isr": "2",
        }


def test_producers_wait_for_every_in_sync_replica_and_consumers_read_committed(
    kafka_ha: Settings,
):
    config = bus.producer_config(kafka_ha)
    assert (config["acks"], config["enable_idempotence"]) == ("all", True)
    props, _ = rdkafka_config(config)  # the librdkafka producer (the default client)
    assert (props["acks"], props["enable.idempotence"]) == ("all", True)
    assert props["bootstrap.servers"].count(",") == 2  # all three brokers

    python_client = bus.make_producer(
        kafka_ha.model_copy(update={"kafka_producer_client": "kafka-python"}))
    try:
        assert python_client.config["acks"] in (-1, "all")
        assert python_client.config["enable_idempotence"] is True
    finally:
        python_client.close(timeout=5)

    consumer = bus.make_consumer(kafka_ha, [], f"test-ha-{uuid.uuid4().hex[:6]}")
    try:
        assert consumer.config["isolation_level"] == "read_committed"
    finally:
        consumer.close()
    # The Flink jobs' Kafka sources (their sinks write in transactions).
    from flink.jobs.common import kafka_source_ddl

    ddl = kafka_source_ddl("src", topics.FEEDBACK, kafka_ha, "test")
    assert "'properties.isolation.level'='read_committed'" in ddl


def test_two_brokers_down_refuse_a_publish_instead_of_acknowledging_it(cluster: Settings):
    src = f"ha-two-down-{uuid.uuid4().hex[:8]}"
    producer = bus.make_producer(cluster)
    try:
        # The key's partition, and the broker that leads it: that one stays up.
        partition = bus.send_event(producer, topics.FEEDBACK, feedback(src, 0),
                                   key=src).get(timeout=30).partition
        survivor = kafka_cluster.leader(cluster, topics.FEEDBACK, partition)
        others = [b.node_id for b in kafka_cluster.brokers(cluster)
                  if b.node_id != survivor.node_id]
        kafka_cluster.kill_brokers(cluster, others)

        with pytest.raises(Unavailable):
            bus.publish(producer, topics.FEEDBACK, [feedback(src, 1)], key=src, timeout_s=8)
    finally:
        producer.close(timeout=5)


def test_the_leader_killed_while_publishing_loses_and_repeats_nothing(cluster: Settings):
    src = f"ha-leader-down-{uuid.uuid4().hex[:8]}"
    producer = bus.make_producer(cluster)
    acked: list[str] = []
    failed: list[str] = []
    stop = threading.Event()

    def publish_one_by_one() -> None:
        i = 0
        while not stop.is_set():
            event = feedback(src, i)
            try:
                bus.publish(producer, topics.FEEDBACK, [event], key=src, timeout_s=60)
                acked.append(event.id)
            except Unavailable:
                failed.append(event.id)
            i += 1

    def wait_for_acks(count: int) -> None:
        deadline = time.monotonic() + 120
        while len(acked) < count and not failed:
            assert time.monotonic() < deadline, f"{len(acked)} of {count} acknowledged"
            time.sleep(0.05)

    try:
        partition = bus.send_event(producer, topics.FEEDBACK, feedback(src, -1),
                                   key=src).get(timeout=30).partition
        acked.append(f"{src}--1")
        leader = kafka_cluster.leader(cluster, topics.FEEDBACK, partition)
        publisher = threading.Thread(target=publish_one_by_one, daemon=True)
        publisher.start()
        try:
            wait_for_acks(20)
            kafka_cluster.kill_broker(cluster, leader.node_id)
            wait_for_acks(len(acked) + 20)
        finally:
            stop.set()
            publisher.join(timeout=120)
        assert failed == []
        assert kafka_cluster.leader(cluster, topics.FEEDBACK, partition).node_id != leader.node_id
    finally:
        producer.close(timeout=5)

    kafka_cluster.restart_broker(cluster, leader.node_id)
    kafka_cluster.wait_isr(cluster, topics.FEEDBACK, size=3)
    seen = Counter(read_committed_ids(cluster, src))
    assert {i: n for i, n in seen.items() if n != 1} == {}  # nothing twice
    assert set(acked) - set(seen) == set()  # nothing acknowledged lost


def read_committed_ids(settings: Settings, src: str) -> list[str]:
    """Ids of the feedback events of ``src`` in the topic, read by driftloop's own consumer
    (read_committed) from the beginning up to the current end of every partition."""
    consumer = bus.make_consumer(settings, [], f"test-ha-read-{uuid.uuid4().hex[:6]}")
    try:
        parts = [TopicPartition(topics.FEEDBACK, p)
                 for p in sorted(consumer.partitions_for_topic(topics.FEEDBACK) or [])]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        ids: list[str] = []
        deadline = time.monotonic() + 120
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, "reading the feedback topic took too long"
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.key == src.encode():
                        ids.append(ev.from_kafka(r.value, r.headers, r.key).id)
        return ids
    finally:
        consumer.close()
