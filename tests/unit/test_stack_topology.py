"""What ``driftloop up`` starts in each topology (``Settings.topology``), read from the
components' specs: no process is started."""

from __future__ import annotations

from pathlib import Path

from driftloop import bus
from driftloop.local.components import selected
from driftloop.local.components.flink import installed
from driftloop.local.components.kafka import bootstrap_for, brokers_for
from driftloop.settings import Settings

PORTS = {"kafka_port": 19092, "kafka_controller_port": 19093, "kafka_metrics_port": 19404,
         "kafka_2_port": 19192, "kafka_2_controller_port": 19193,
         "kafka_2_metrics_port": 19405, "kafka_3_port": 19292,
         "kafka_3_controller_port": 19293, "kafka_3_metrics_port": 19406}


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(state_dir=tmp_path, **PORTS, **values)  # type: ignore[arg-type]


def test_light_runs_one_broker_and_topics_of_one_replica(tmp_path):
    s = settings(tmp_path)
    assert [c.name for c in selected(s.model_copy(update={"components": ("kafka",)}))] == [
        "kafka"]
    assert bootstrap_for(s) == "127.0.0.1:19092"
    assert bus.topic_replication(s) == (1, 1)
    (broker,) = brokers_for(s)
    broker.write_config()
    config = broker.config_path.read_text().splitlines()
    assert "controller.quorum.voters=1@127.0.0.1:19093" in config
    assert "offsets.topic.replication.factor=1" in config


def test_ha_runs_three_brokers_in_one_quorum_and_two_taskmanagers(tmp_path):
    s = settings(tmp_path, topology="ha", flink_taskmanagers=1)
    kafka = selected(s.model_copy(update={"components": ("kafka",)}))
    assert [c.name for c in kafka] == ["kafka-1", "kafka-2", "kafka-3"]
    assert [c.endpoint for c in kafka] == ["127.0.0.1:19092", "127.0.0.1:19192",
                                           "127.0.0.1:19292"]
    assert bootstrap_for(s) == "127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292"
    assert bus.topic_replication(s) == (3, 2)
    assert bus.topic_configs(s)["min.insync.replicas"] == "2"
    assert bus.topic_configs(s)["unclean.leader.election.enable"] == "false"
    voters = "controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293"
    for n, broker in enumerate(brokers_for(s), start=1):
        broker.write_config()
        config = broker.config_path.read_text().splitlines()
        assert {voters, f"node.id={n}", "min.insync.replicas=2",
                "default.replication.factor=3", "unclean.leader.election.enable=false",
                "transaction.state.log.replication.factor=3",
                "transaction.state.log.min.isr=2"} <= set(config)
    lag = next(c for c in selected(s) if c.name == "kafka-lag")
    assert lag.env["DRIFTLOOP_KAFKA_BOOTSTRAP"] == bootstrap_for(s)
    if installed(s):
        names = [c.name for c in selected(s)]
        assert {"flink-taskmanager-1", "flink-taskmanager-2"} <= set(names)
        tms = selected(s.model_copy(update={"components": ("flink-taskmanager",)}))
        assert [c.name for c in tms] == ["flink-taskmanager-1", "flink-taskmanager-2"]


def test_the_brokers_of_ha_share_one_cluster_id(tmp_path):
    s = settings(tmp_path, topology="ha")
    ids = {b._cluster_id() for b in brokers_for(s)}
    assert len(ids) == 1 and ids != {""}
