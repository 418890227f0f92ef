"""The Kafka brokers of the local stack, with the DESIGN.md topics created once they are up:
one broker (``topology`` light) or three in one KRaft quorum ('ha')."""

from __future__ import annotations

import sys
import time

from driftloop import bus
from driftloop.errors import StackError
from driftloop.local.components import ComponentSpec
from driftloop.local.kafka import KafkaBroker, jmx_agent
from driftloop.local.process import http_ok, wait_until
from driftloop.settings import PROJECT_ROOT, Settings


def broker_for(settings: Settings) -> KafkaBroker:
    """The first (in the light topology the only) broker of the local stack."""
    return brokers_for(settings)[0]


def brokers_for(settings: Settings) -> list[KafkaBroker]:
    """The brokers of the local stack: one (light), or three KRaft nodes, each a broker and
    a controller, in one quorum of three ('ha')."""
    libs = settings.cache_dir / "kafka" / "libs"
    agent = jmx_agent(settings.cache_dir)
    if settings.topology != "ha":
        return [KafkaBroker(
            libs_dir=libs,
            data_dir=settings.state_dir / "kafka",
            port=settings.kafka_port,
            controller_port=settings.kafka_controller_port,
            heap=settings.kafka_heap,
            metrics_port=settings.kafka_metrics_port,
            agent=agent,
        )]
    ports = [
        (settings.kafka_port, settings.kafka_controller_port, settings.kafka_metrics_port),
        (settings.kafka_2_port, settings.kafka_2_controller_port, settings.kafka_2_metrics_port),
        (settings.kafka_3_port, settings.kafka_3_controller_port, settings.kafka_3_metrics_port),
    ]
    voters = tuple((n, controller) for n, (_, controller, _) in enumerate(ports, start=1))
    replication, min_insync = bus.topic_replication(settings)
    root = settings.state_dir / "kafka-ha"
    return [
        KafkaBroker(
            libs_dir=libs,
            data_dir=root / f"broker-{n}",
            port=port,
            controller_port=controller,
            heap=settings.kafka_heap,
            metrics_port=metrics,
            agent=agent,
            node_id=n,
            voters=voters,
            cluster_id_file=root / "cluster.id",
            replication=replication,
            min_insync=min_insync,
        )
        for n, (port, controller, metrics) in enumerate(ports, start=1)
    ]


def bootstrap_for(settings: Settings) -> str:
    """The bootstrap servers of the local stack's Kafka: every broker, so that a client
    finds the cluster while one of them is down."""
    return ",".join(b.bootstrap for b in brokers_for(settings))


def broker_name(settings: Settings, broker: KafkaBroker) -> str:
    """The component name of a broker: ``kafka`` (light), ``kafka-<node id>`` ('ha')."""
    return f"kafka-{broker.node_id}" if settings.topology == "ha" else "kafka"


def create_topics(settings: Settings, timeout_s: float = 60.0) -> None:
    """Create the topics, retrying while the broker finishes electing its controller."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            bus.ensure_topics(settings)
            return
        except Exception as e:
            if time.monotonic() > deadline:
                raise StackError(f"creating topics failed: {e}") from e
            time.sleep(1)


def brokers_known(settings: Settings, brokers: list[KafkaBroker]) -> bool:
    """Whether every running broker serves clients and its metadata names every running
    broker: a client bootstrapped from it reaches them all. (A broker opens its listener
    before its own metadata shows it unfenced: a client that bootstraps from it then does
    not know it for a moment.) A broker that is down (its controller does not listen) is
    left out."""
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    running = [b for b in brokers if b.controller_listening()]
    if not all(b.healthy() for b in running):
        return False
    for b in running:
        config = {**bus.client_config(settings, "admin"), "bootstrap_servers": [b.bootstrap]}
        admin = KafkaAdminClient(**config, request_timeout_ms=5_000)
        try:  # asks each broker known to this client for one value: fails if one is not
            admin.describe_configs([
                ConfigResource(ConfigResourceType.BROKER, str(r.node_id), {"node.id": None})
                for r in running
            ])
        finally:
            admin.close()
    return True


def components(settings: Settings) -> list[ComponentSpec]:
    brokers = brokers_for(settings)
    stack_settings = settings.model_copy(update={"kafka_bootstrap": bootstrap_for(settings)})

    def ready() -> None:
        # Topics of replication factor 3 are refused until three brokers registered: the
        # retries wait for them. (After a restart they exist, and nothing waits.)
        create_topics(stack_settings, timeout_s=60.0 if len(brokers) == 1 else 300.0)
        if len(brokers) > 1:
            wait_until(lambda: brokers_known(stack_settings, brokers), timeout_s=90,
                       what="the Kafka brokers to know each other", interval_s=0.5)

    return [
        *(
            ComponentSpec(
                name=broker_name(settings, broker),
                argv=broker.argv(),
                order=10,
                endpoint=broker.bootstrap,
                health=broker.healthy,
                # A node of a quorum serves clients only once the quorum has elected its
                # controller: it counts as started once its own controller listens, and
                # the last node's ``ready`` waits for every broker.
                started=broker.controller_listening if len(brokers) > 1 else None,
                ports=(broker.port, broker.controller_port,
                       *((broker.metrics_port,) if broker.metrics else ())),
                start_timeout_s=90,
                prepare=broker.format_storage,
                after_start=ready if broker is brokers[-1] else None,
                metrics=broker.metrics,
                extra={"node_id": broker.node_id} if len(brokers) > 1 else {},
                # Stopped one by one, the quorum's last node has no quorum left to approve
                # its controlled shutdown: ``down`` stops the nodes together.
                stop_group="kafka" if len(brokers) > 1 else "",
            )
            for broker in brokers
        ),
        lag_exporter(settings, bootstrap_for(settings)),
    ]


def lag_exporter(settings: Settings, bootstrap: str) -> ComponentSpec:
    """Consumer-group lag on /metrics (driftloop.monitoring.kafka_lag)."""
    lag = f"127.0.0.1:{settings.kafka_lag_port}"
    return ComponentSpec(
        name="kafka-lag",
        argv=[sys.executable, "-m", "driftloop.monitoring.kafka_lag"],
        order=11,
        endpoint=f"http://{lag}/metrics",
        health=lambda: http_ok(f"http://{lag}/metrics", timeout_s=5.0),
        env={"DRIFTLOOP_KAFKA_BOOTSTRAP": bootstrap,
             "DRIFTLOOP_KAFKA_LAG_PORT": str(settings.kafka_lag_port),
             "PYTHONUNBUFFERED": "1"},
        cwd=PROJECT_ROOT,
        ports=(settings.kafka_lag_port,),
        start_timeout_s=30,
        metrics=lag,
    )
